"""SMS text fits one GSM-7 message; the gateway resource binds only the DPA_SMS_* variables that are set."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from dpa_assets.alerts.messages import SMS_LIMIT, is_gsm7, sms_text, to_gsm7
from dpa_assets.deployments import sms_gateway

SMS_VARIABLES = ("DPA_SMS_BASE_URL", "DPA_SMS_USERNAME", "DPA_SMS_API_KEY", "DPA_SMS_RECIPIENTS", "DPA_SMS_SENDER")


@pytest.mark.parametrize("reason", ["", "short", "x" * 500, "Édéa → Douala [été] {€} ~ | ^ \\ 中文 " * 10])
def test_message_fits_one_sms_and_keeps_the_action(reason):
    text = sms_text("2026-11-25", "load FAILED", reason, "Re-run: dpa materialize --date 2026-11-25")
    assert len(text) <= SMS_LIMIT and is_gsm7(text)
    assert text.startswith("DPA 2026-11-25 load FAILED") and text.endswith("dpa materialize --date 2026-11-25")


def test_gsm7_folding_keeps_gsm_letters_and_replaces_the_rest():
    assert to_gsm7("Édéa") == "Édéa"  # É and é are GSM-7 basic characters
    assert to_gsm7("Ngaoundéré ô") == "Ngaoundéré o"
    assert to_gsm7("[a]{b}") == "(a)(b)"
    assert to_gsm7("中") == "?"


def test_no_sms_variables_means_not_configured(monkeypatch):
    for name in SMS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with dg.build_resources({"sms": sms_gateway()}) as resources:
        assert not resources.sms.configured()


def test_sms_variables_are_bound_as_env_vars_and_the_key_stays_out_of_reprs(monkeypatch):
    for name in SMS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DPA_SMS_USERNAME", "dpa")
    monkeypatch.setenv("DPA_SMS_API_KEY", "atsk_secret_value_123")
    monkeypatch.setenv("DPA_SMS_RECIPIENTS", "+237670000001,+237690000002")
    unresolved = sms_gateway()
    assert "atsk_secret_value_123" not in repr(unresolved)
    with dg.build_resources({"sms": unresolved}) as resources:
        assert resources.sms.configured() and resources.sms.recipient_list() == ["+237670000001", "+237690000002"]
        assert resources.sms.base_url == "https://api.africastalking.com"
        assert "atsk_secret_value_123" not in repr(resources.sms)


def test_top_reasons_read_from_the_table_and_from_an_older_markdown_record():
    from dpa_assets.alerts.watch import top_reasons
    from dpa_assets.assets import reasons_table

    frame = pd.DataFrame({"column": ["customer", "wagon_id"], "rule": ["required", "uic_check_digit"], "rows": [4, 2]})
    assert top_reasons({"top_reasons": reasons_table(frame)}) == [
        "customer: required (4)",
        "wagon_id: uic_check_digit (2)",
    ]
    older = {"top_rejection_reasons": frame.to_markdown(index=False)}
    assert top_reasons(older, limit=1) == ["customer: required (4)"]
    assert top_reasons({}) == []
