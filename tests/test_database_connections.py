"""Connections to a database server: one that died (a restarted server, a firewall's idle cut) is replaced
before the next request uses it, instead of failing one request in every web thread (settings: DATABASES)."""

from __future__ import annotations

import pytest
from django.db import close_old_connections, connection

from training.models import Dataset

pytestmark = pytest.mark.skipif(connection.vendor != "postgresql", reason="a server's connections; SQLite opens a file")


def terminate_this_connection() -> None:
    """What a server restart does to a connection that sits idle between two requests."""
    connection.ensure_connection()
    backend = connection.connection.info.backend_pid
    other = connection.get_new_connection(connection.get_connection_params())
    other.autocommit = True
    other.execute("SELECT pg_terminate_backend(%s)", [backend])
    other.close()


@pytest.mark.django_db(transaction=True)
def test_a_connection_the_server_dropped_is_replaced_when_the_next_request_starts(alice):
    assert connection.settings_dict["CONN_MAX_AGE"] == 60 and connection.settings_dict["CONN_HEALTH_CHECKS"]
    Dataset.objects.create(name="Before", created_by=alice)
    terminate_this_connection()
    close_old_connections()  # what Django runs as each request starts (the request_started signal)
    assert list(Dataset.objects.values_list("name", flat=True)) == ["Before"]


@pytest.mark.django_db(transaction=True)
def test_without_the_health_check_the_first_request_after_a_drop_fails(alice, monkeypatch):
    """Why the setting is there: a kept connection is otherwise trusted until it fails a request."""
    from django.db import OperationalError

    monkeypatch.setitem(connection.settings_dict, "CONN_HEALTH_CHECKS", False)
    connection.close()
    terminate_this_connection()
    close_old_connections()
    with pytest.raises(OperationalError):
        Dataset.objects.count()
    connection.close()
