# Grafana OSS on EC2 (Amazon Linux 2023) with the Athena data source and the dashboard kept in
# terraform/grafana/dashboards/. Reachable on port 3000 from var.allowed_cidrs only; optional
# Route53 A record. The admin password is generated here, kept in SSM and read at boot by the
# instance itself, so it never appears in user_data, outputs or logs.

data "aws_ssm_parameter" "al2023_ami" {
  name = var.grafana_ami_ssm_parameter
}

data "aws_vpc" "default" {
  count   = var.grafana_subnet_id == null ? 1 : 0
  default = true
}

data "aws_subnets" "default" {
  count = var.grafana_subnet_id == null ? 1 : 0

  filter {
    name   = "vpc-id"
    values = [data.aws_vpc.default[0].id]
  }

  filter {
    name   = "default-for-az"
    values = ["true"]
  }
}

locals {
  grafana_subnet_id = var.grafana_subnet_id != null ? var.grafana_subnet_id : sort(data.aws_subnets.default[0].ids)[0]
  grafana_dns       = var.domain_name != null && var.hosted_zone_id != null
  grafana_host      = local.grafana_dns ? var.domain_name : aws_eip.grafana.public_ip
}

data "aws_subnet" "grafana" {
  id = local.grafana_subnet_id
}

resource "random_password" "grafana_admin" {
  length           = 32
  special          = true
  override_special = "-_.~"
  min_lower        = 2
  min_upper        = 2
  min_numeric      = 2
}

resource "aws_ssm_parameter" "grafana_admin_password" {
  name        = local.grafana_password_ssm_name
  description = "Grafana admin password (user admin) of ${var.project}"
  type        = "SecureString"
  key_id      = aws_kms_key.main.arn
  value       = random_password.grafana_admin.result
}

resource "aws_security_group" "grafana" {
  name        = "${var.project}-grafana"
  description = "Grafana: port 3000 from the allowed CIDRs, HTTPS out for packages and AWS APIs"
  vpc_id      = data.aws_subnet.grafana.vpc_id

  ingress {
    description = "Grafana UI from the allowed networks"
    from_port   = 3000
    to_port     = 3000
    protocol    = "tcp"
    cidr_blocks = var.allowed_cidrs
  }

  egress {
    description = "HTTPS to rpm.grafana.com, the AL2023 repositories and the AWS APIs (Athena, Glue, S3, SSM)"
    from_port   = 443
    to_port     = 443
    protocol    = "tcp"
    cidr_blocks = ["0.0.0.0/0"]
  }
}

data "aws_iam_policy_document" "ec2_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "grafana" {
  name               = "${var.project}-grafana"
  assume_role_policy = data.aws_iam_policy_document.ec2_assume.json
}

data "aws_iam_policy_document" "grafana" {
  statement {
    sid = "RunAthenaQueriesInWorkgroup"
    actions = [
      "athena:StartQueryExecution",
      "athena:StopQueryExecution",
      "athena:GetQueryExecution",
      "athena:GetQueryResults",
      "athena:GetQueryResultsStream",
      "athena:GetWorkGroup",
      "athena:BatchGetQueryExecution",
    ]
    resources = [aws_athena_workgroup.main.arn]
  }

  statement {
    sid = "BrowseAthenaCatalog"
    actions = [
      "athena:GetDataCatalog",
      "athena:ListDataCatalogs",
      "athena:ListDatabases",
      "athena:GetDatabase",
      "athena:ListTableMetadata",
      "athena:GetTableMetadata",
    ]
    resources = [local.athena_catalog_arn]
  }

  # The data source's workgroup picker; ListWorkGroups has no resource-level permissions.
  statement {
    sid       = "ListWorkGroups"
    actions   = ["athena:ListWorkGroups"]
    resources = ["*"]
  }

  statement {
    sid = "ReadGlueCatalog"
    actions = [
      "glue:GetDatabase",
      "glue:GetDatabases",
      "glue:GetTable",
      "glue:GetTables",
      "glue:GetPartition",
      "glue:GetPartitions",
      "glue:BatchGetPartition",
    ]
    resources = [local.glue_catalog_arn, local.glue_database_arn, local.glue_tables_arn]
  }

  statement {
    sid       = "ReadLogAndSpikeData"
    actions   = ["s3:GetBucketLocation", "s3:ListBucket"]
    resources = [aws_s3_bucket.logs.arn, aws_s3_bucket.spikes.arn]
  }

  statement {
    sid     = "ReadLogAndSpikeObjects"
    actions = ["s3:GetObject"]
    resources = [
      "${aws_s3_bucket.logs.arn}/${local.log_prefix}*",
      "${aws_s3_bucket.spikes.arn}/${local.spike_prefix}*",
    ]
  }

  statement {
    sid = "AthenaResultsBucket"
    actions = [
      "s3:GetBucketLocation",
      "s3:ListBucket",
      "s3:ListBucketMultipartUploads",
    ]
    resources = [aws_s3_bucket.athena_results.arn]
  }

  statement {
    sid = "AthenaResultsObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${aws_s3_bucket.athena_results.arn}/athena/*"]
  }

  statement {
    sid       = "UseProjectKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.main.arn]
  }

  statement {
    sid       = "ReadOwnAdminPassword"
    actions   = ["ssm:GetParameter"]
    resources = [aws_ssm_parameter.grafana_admin_password.arn]
  }
}

resource "aws_iam_role_policy" "grafana" {
  name   = "grafana-athena-read"
  role   = aws_iam_role.grafana.id
  policy = data.aws_iam_policy_document.grafana.json
}

resource "aws_iam_instance_profile" "grafana" {
  name = "${var.project}-grafana"
  role = aws_iam_role.grafana.name
}

resource "aws_instance" "grafana" {
  #checkov:skip=CKV_AWS_126:Basic 5-minute metrics suffice for one dashboard host; detailed monitoring is billed per metric.
  ami                         = data.aws_ssm_parameter.al2023_ami.value
  instance_type               = var.grafana_instance_type
  subnet_id                   = local.grafana_subnet_id
  vpc_security_group_ids      = [aws_security_group.grafana.id]
  iam_instance_profile        = aws_iam_instance_profile.grafana.name
  ebs_optimized               = true
  user_data_replace_on_change = true

  # gzip keeps the script (with the dashboard JSON inside) under EC2's 16 KB user-data limit;
  # cloud-init unpacks it. Contains no secret: the password is fetched from SSM at boot.
  user_data_base64 = base64gzip(templatefile("${path.module}/grafana/user_data.sh.tftpl", {
    region               = local.region
    admin_password_param = aws_ssm_parameter.grafana_admin_password.name
    datasource_yaml = templatefile("${path.module}/grafana/provisioning/datasource.yaml.tftpl", {
      region    = local.region
      database  = aws_glue_catalog_database.main.name
      workgroup = aws_athena_workgroup.main.name
    })
    dashboard_provider_yaml = file("${path.module}/grafana/provisioning/dashboards.yaml")
    dashboard_json          = file("${path.module}/grafana/dashboards/smartfarm.json")
  }))

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  root_block_device {
    encrypted   = true
    kms_key_id  = aws_kms_key.main.arn
    volume_type = "gp3"
    volume_size = var.grafana_root_volume_gb
  }

  tags = {
    Name = "${var.project}-grafana"
  }

  lifecycle {
    precondition {
      condition     = (var.domain_name == null) == (var.hosted_zone_id == null)
      error_message = "Set both domain_name and hosted_zone_id (for the Route53 record) or neither."
    }
  }

  depends_on = [aws_iam_role_policy.grafana]
}

# A fixed address, so the Route53 record and bookmarks survive stop/start and replacement.
resource "aws_eip" "grafana" {
  domain   = "vpc"
  instance = aws_instance.grafana.id

  tags = {
    Name = "${var.project}-grafana"
  }
}

resource "aws_route53_record" "grafana" {
  count = local.grafana_dns ? 1 : 0

  zone_id = var.hosted_zone_id
  name    = var.domain_name
  type    = "A"
  ttl     = 300
  records = [aws_eip.grafana.public_ip]
}
