from datetime import datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from smartfarm_cli.core.generator import ANOMALY_KINDS, generate
from smartfarm_cli.core.rules import RulesError, detect, load_rules
from smartfarm_cli.core.validate import table_from_rows

T0 = datetime(2026, 11, 28, 10)


def rows_for(values, device="d1", step_s=60, error_codes=None):
    """One device's temperature series (humidity/co2 steady)."""
    out = []
    for i, temp in enumerate(values):
        ts = int((T0 + timedelta(seconds=i * step_s)).timestamp() * 1000)
        code = error_codes[i] if error_codes else 0
        out.append(("gh-1", device, ts, temp, 60.0, 800.0, code))
    return table_from_rows(out)


def rules_of(spikes):
    return sorted(
        zip(
            spikes["rule"].to_pylist(),
            spikes["metric"].to_pylist(),
            spikes["temperature"].to_pylist(),
            strict=True,
        )
    )


def test_seed_examples_are_critical():
    rules = load_rules()
    spikes = detect(rows_for([20.0, 400.0, 20.5, 21.0], error_codes=[0, 0, 0, 1]), rules, "k")
    assert rules_of(spikes) == [
        ("impossible", "temperature", 400.0),
        ("sensor_error", "error_code", 21.0),
    ]
    assert set(spikes["severity"].to_pylist()) == {"critical"}
    assert spikes["source_key"].to_pylist() == ["k", "k"]


def test_out_of_band_is_warning_and_not_double_counted_with_impossible():
    spikes = detect(rows_for([20.0, 20.5, 41.0, 90.0]), load_rules())
    kinds = {(r, m) for r, m, _ in rules_of(spikes)}
    assert ("out_of_band", "temperature") in kinds
    by_value = {t: r for r, _, t in rules_of(spikes) if r in ("out_of_band", "impossible")}
    assert by_value == {41.0: "out_of_band", 90.0: "impossible"}


def test_jump_flags_the_departure_not_the_return():
    spikes = detect(rows_for([20.0, 20.2, 32.0, 20.4, 20.3]), load_rules())
    assert rules_of(spikes) == [("jump", "temperature", 32.0)]


def test_step_change_is_flagged_once():
    spikes = detect(rows_for([20.0, 20.1, 30.0, 30.1, 30.2]), load_rules())
    assert rules_of(spikes) == [("jump", "temperature", 30.0)]


def test_jump_rate_is_per_minute_and_ignores_critical_neighbours():
    # 4 degrees over 2 minutes is 2 degrees/min: below the 3 degrees/min limit.
    assert detect(rows_for([20.0, 24.0], step_s=120), load_rules()).num_rows == 0
    # The reading after a 400 degree glitch is compared with the one before the glitch.
    spikes = detect(rows_for([20.0, 400.0, 20.3]), load_rules())
    assert rules_of(spikes) == [("impossible", "temperature", 400.0)]


def test_jump_does_not_cross_devices():
    table = pa.concat_tables(
        [rows_for([20.0, 20.1], device="a"), rows_for([30.0, 30.1], device="b")]
    )
    assert detect(table, load_rules()).num_rows == 0


def test_rules_override_file(tmp_path, monkeypatch):
    override = tmp_path / "rules.toml"
    override.write_text("[out_of_band]\ntemperature = [5.0, 25.0]\n")
    monkeypatch.setenv("SMARTFARM_RULES", str(override))
    spikes = detect(rows_for([20.0, 20.5, 26.0]), load_rules())
    assert ("out_of_band", "temperature", 26.0) in rules_of(spikes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[nope]\nx = 1\n", "unknown rules section [nope]"),
        ("[jump]\nseverity = 'loud'\n", "severity must be critical or warning"),
        ("[impossible]\ntemperature = [10, 5]\n", "low < high"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_bad_rules_file_gives_clear_error(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(RulesError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_rules(path)


def test_generated_anomalies_are_exactly_the_spikes():
    generated = generate(
        1_795_860_000_000, 2000, 60, greenhouses=5, devices=2, anomaly_rate=0.02, seed=11
    )
    spikes = detect(generated.table, load_rules())
    table = generated.table.append_column("injected", generated.injected)
    key = ["greenhouse_id", "device_id", "timestamp"]

    def keys(t):
        return set(zip(*(t[k].to_pylist() for k in key), strict=True))

    injected = table.filter(pc.is_valid(table["injected"]))
    healthy = table.filter(pc.is_null(table["injected"]))
    assert keys(spikes) & keys(healthy) == set()
    assert all(generated.count(kind) > 0 for kind in ANOMALY_KINDS)
    # Every injected reading is caught, by the rule named after its kind.
    by_key = {}
    for row in spikes.select([*key, "rule"]).to_pylist():
        by_key.setdefault(tuple(row[k] for k in key), set()).add(row["rule"])
    for row in injected.select([*key, "injected"]).to_pylist():
        assert row["injected"] in by_key[tuple(row[k] for k in key)]


def test_generator_is_seeded_and_plausible():
    a = generate(1_795_860_000_000, 1440, 60, greenhouses=3, devices=2, seed=5)
    b = generate(1_795_860_000_000, 1440, 60, greenhouses=3, devices=2, seed=5)
    c = generate(1_795_860_000_000, 1440, 60, greenhouses=3, devices=2, seed=6)
    assert a.table.equals(b.table) and not a.table.equals(c.table)
    assert detect(a.table, load_rules()).num_rows == 0  # healthy data raises nothing
    temps = a.table["temperature"]
    assert 10 < pc.min(temps).as_py() < pc.max(temps).as_py() < 35
    # Diurnal: afternoon (05:00 UTC = 14:00 KST) warmer than night (20:00 UTC = 05:00 KST).
    hour = pc.hour(a.table["timestamp"])
    warm = pc.mean(temps.filter(pc.equal(hour, 5))).as_py()
    cold = pc.mean(temps.filter(pc.equal(hour, 20))).as_py()
    assert warm - cold > 8


def test_generator_noise_is_standard_normal_and_seeded():
    from smartfarm_cli.core import generator

    first, second, third = generator._gaussians(200_000, 3, seed=11)
    again = generator._gaussians(200_000, 3, seed=11)[0]
    other = generator._gaussians(200_000, 1, seed=12)[0]
    assert first.equals(again) and not first.equals(other) and not first.equals(second)
    for values in (first, second, third):
        assert abs(pc.mean(values).as_py()) < 0.02
        assert abs(pc.stddev(values).as_py() - 1) < 0.02
        # the tails a normal has: ~4.6 % beyond 2 sigma, ~0.27 % beyond 3
        beyond2 = pc.mean(pc.cast(pc.greater(pc.abs(values), 2), "int8")).as_py()
        beyond3 = pc.mean(pc.cast(pc.greater(pc.abs(values), 3), "int8")).as_py()
        assert 0.040 < beyond2 < 0.052 and 0.0018 < beyond3 < 0.0037


def test_tables_with_no_jump_baseline_do_not_crash():
    # Only a critical reading: the jump baseline is empty (pyarrow used to segfault here).
    assert rules_of(detect(rows_for([400.0]), load_rules())) == [
        ("impossible", "temperature", 400.0)
    ]
    assert detect(rows_for([20.0]).slice(0, 0), load_rules()).num_rows == 0


def test_generator_accepts_tiny_anomaly_rates():
    generated = generate(1_795_860_000_000, 10, 60, anomaly_rate=1e-108, seed=1)
    assert generated.table.num_rows == 60
    assert all(generated.count(kind) == 0 for kind in ANOMALY_KINDS)


def test_rows_without_timestamp_are_skipped_and_the_rest_judged():
    table = rows_for([20.0, 400.0])
    stamps = pa.array([None, table["timestamp"][1].as_py()], pa.timestamp("ms"))
    table = table.set_column(2, "timestamp", stamps)
    assert rules_of(detect(table, load_rules())) == [("impossible", "temperature", 400.0)]
