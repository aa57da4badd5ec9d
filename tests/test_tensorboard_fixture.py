"""The `tensorboard` fixture itself: other tests trust what it reports about the HParams dashboard."""

import pytest


def test_tensorboard_fixture_ignores_proxies_and_reports_http_errors(tmp_path, tensorboard, monkeypatch):
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")  # a proxy that refuses every connection
    monkeypatch.delenv("no_proxy", raising=False)
    api = tensorboard(tmp_path)
    assert api.port > 0 and api.session_groups() == [] and api.wait_for(0, timeout=5) == []
    with pytest.raises(AssertionError, match="404"):
        api.post("no-such-route", {})
