"""terraform/silent.tf and modules/lambda_function (issue 14): the silent_check function, its
least-privilege policy and its schedule, read statically like the rest of the stack."""

from __future__ import annotations

from test_terraform import TF, load_hcl, one, ref, res, tf

M = "modules/lambda_function:"


def module_call() -> dict:
    doc = load_hcl(TF / "silent.tf")
    ((body,),) = [list(m.values()) for m in doc["module"] if "silent_check" in m]
    return body


def test_silent_check_uses_the_local_module_with_its_zip_and_environment():
    call = module_call()
    assert call["source"] == "./modules/lambda_function"
    assert call["zip_path"] == ref("local.lambda_zip.silent_check")
    assert call["zip_hash"] == ref("local.lambda_zip_hash.silent_check")
    assert call["kms_key_arn"] == ref("aws_kms_key.main.arn")
    assert call["log_retention_days"] == ref("var.cloudwatch_log_retention_days")
    assert call["policy_json"] == ref("data.aws_iam_policy_document.silent_check.json")
    assert set(call["environment"]) == {
        "STATE_TABLE",
        "SPIKE_BUCKET",
        "DISCORD_WEBHOOK_SSM_PARAMETER",
        "LOG_LEVEL",
    }
    assert tf()["locals"]["lambda_zip"]["silent_check"] == (
        ref("local.lambda_build_dir") + "/silent_check.zip"
    )


def test_module_gives_kms_logs_with_retention_an_encrypted_dlq_and_tracing():
    logs = res("aws_cloudwatch_log_group", M + "function")
    assert logs["retention_in_days"] == ref("var.log_retention_days")
    assert logs["kms_key_id"] == ref("var.kms_key_arn")
    dlq = res("aws_sqs_queue", M + "dead_letters")
    assert dlq["kms_master_key_id"] == ref("var.kms_key_arn")
    fn = res("aws_lambda_function", M + "function")
    assert one(fn, "dead_letter_config")["target_arn"] == ref("aws_sqs_queue.dead_letters.arn")
    assert one(fn, "tracing_config")["mode"] == "Active"
    assert fn["runtime"] == "python3.12" and fn["kms_key_arn"] == ref("var.kms_key_arn")
    doc = tf()["data"]["aws_iam_policy_document"][M + "function"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert stmts["WriteOwnLogs"]["resources"] == [
        ref("aws_cloudwatch_log_group.function.arn") + ":*"
    ]
    assert stmts["SendToOwnDeadLetterQueue"]["resources"] == [ref("aws_sqs_queue.dead_letters.arn")]


def test_silent_check_policy_is_least_privilege():
    doc = tf()["data"]["aws_iam_policy_document"]["silent_check"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert set(stmts) == {
        "ScanAndWriteDeviceState",
        "UseProjectKeyThroughServices",
        "ReadWriteAlertMarkers",
        "ListAlertMarkers",
    }
    assert stmts["ReadWriteAlertMarkers"]["resources"] == [
        ref("aws_s3_bucket.spikes.arn") + "/" + ref("local.alert_prefix") + "*"
    ]
    assert one(stmts["ListAlertMarkers"], "condition")["values"] == [
        ref("local.alert_prefix") + "*"
    ]
    kms = stmts["UseProjectKeyThroughServices"]
    assert kms["resources"] == [ref("aws_kms_key.main.arn")]
    assert len(one(kms, "condition")["values"]) == 3  # dynamodb, s3, ssm: nothing direct
    assert "ssm:GetParameter" in str(doc["dynamic"])  # only when a webhook is configured


def test_schedule_runs_every_few_minutes_with_its_time_retries_and_a_dlq():
    schedule = res("aws_scheduler_schedule", "silent_check")
    assert "var.silent_check_minutes" in schedule["schedule_expression"]
    assert schedule["kms_key_arn"] == ref("aws_kms_key.main.arn")
    assert one(schedule, "flexible_time_window")["mode"] == "OFF"
    target = one(schedule, "target")
    assert target["arn"] == ref("module.silent_check.function_arn")
    assert target["role_arn"] == ref("aws_iam_role.silent_schedule.arn")
    assert "<aws.scheduler.scheduled-time>" in target["input"]
    assert one(target, "retry_policy")["maximum_retry_attempts"] == 2
    assert one(target, "dead_letter_config")["arn"] == ref(
        "module.silent_check.dead_letter_queue_arn"
    )
    doc = tf()["data"]["aws_iam_policy_document"]["silent_schedule"]
    stmts = {s["sid"]: s for s in doc["statement"]}
    assert stmts["InvokeSilentCheck"]["actions"] == ["lambda:InvokeFunction"]
    assert stmts["InvokeSilentCheck"]["resources"] == [ref("module.silent_check.function_arn")]
    variable = tf()["variable"]["silent_check_minutes"]
    assert variable["default"] == 5 and "validation" in variable


def test_outputs_name_the_table_and_the_function():
    outputs = tf()["output"]
    assert outputs["state_table"]["value"] == ref("aws_dynamodb_table.device_state.name")
    assert outputs["silent_check_function_name"]["value"] == ref(
        "module.silent_check.function_name"
    )
