"""Sync on demand and the run history over HTTP: real Redis, a real arq worker, real Dovecot.

Each test queues on a name of its own on the machine's Redis (`queue_name`), so no other
test's worker takes its jobs; the outage tests reach that Redis through a fault proxy.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import Engine

from app.config import Settings
from app.db import session_scope
from app.db.models import SyncRun, SyncRunStatus, SyncTrigger, utcnow
from app.job_queue import create_queue, enqueue_sync
from tests.support.dovecot import MailUser
from tests.support.factories import MailboxFactory
from tests.support.fault_proxy import FaultProxy
from tests.support.live_api import LiveApi, running_api
from tests.support.mailgen import make_message
from tests.support.ports import free_port
from tests.support.redis_queue import redis_url_through
from tests.support.worker_process import run_worker


def add_run(engine: Engine, mailbox_id: int, **columns: object) -> int:
    with session_scope(engine) as session:
        run = SyncRun.model_validate({"mailbox_id": mailbox_id, **columns})
        session.add(run)
        session.flush()
        assert run.id is not None
        return run.id


def test_queued_sync_runs_on_the_worker_and_brings_the_mail(
    live_api: LiveApi,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    for n in range(2):
        mail_user.append("INBOX", make_message(subject=f"m{n}"))
    mailbox_id = add_mailbox(mail_user)

    queued = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")

    assert queued.status_code == 202
    run = queued.json()
    assert (run["mailbox_id"], run["status"], run["folders_only"]) == (mailbox_id, "queued", False)
    assert (run["started_at"], run["duration_seconds"], run["bytes"]) == (None, None, 0)
    assert run["counts"] == {
        "new": 0,
        "flags_changed": 0,
        "expunged": 0,
        "folders_added": 0,
        "folders_removed": 0,
    }

    run_worker(settings)

    done = live_api.client.get(f"/v1/sync-runs/{run['id']}").json()
    assert (done["status"], done["trigger"], done["error"]) == ("succeeded", "api", None)
    assert done["counts"]["new"] == 2
    assert done["counts"]["folders_added"] >= 6  # INBOX and Dovecot's special-use folders
    assert done["bytes"] > 0
    assert done["duration_seconds"] >= 0
    folders = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/folders").json()
    assert {f["full_name"]: f["message_count"] for f in folders}["INBOX"] == 2


def test_asking_again_while_queued_returns_the_same_run(
    live_api: LiveApi,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    url = f"/v1/mailboxes/{mailbox_id}/sync"

    first = live_api.client.post(url, json={"folders_only": False}).json()
    again = live_api.client.post(url).json()
    folders = live_api.client.post(url, json={"folders_only": True}).json()
    folders_again = live_api.client.post(url, json={"folders_only": True}).json()

    assert again["id"] == first["id"]
    assert folders["id"] == folders_again["id"] != first["id"]
    assert folders["folders_only"] is True
    history = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()
    assert [item["id"] for item in history["items"]] == [folders["id"], first["id"]]

    run_worker(settings)
    after = live_api.client.post(url)

    assert after.status_code == 202
    assert after.json()["id"] not in {first["id"], folders["id"]}
    statuses = {
        run_id: live_api.client.get(f"/v1/sync-runs/{run_id}").json()["status"]
        for run_id in (first["id"], folders["id"])
    }
    assert statuses == {first["id"]: "succeeded", folders["id"]: "succeeded"}


def test_a_failed_sync_says_why(
    live_api: LiveApi, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user, port=free_port())  # nothing listens there

    run = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync").json()
    run_worker(settings)

    failed = live_api.client.get(f"/v1/sync-runs/{run['id']}").json()
    assert (failed["status"], failed["error_code"]) == ("failed", "unreachable")
    assert failed["error"]
    assert failed["finished_at"] is not None


def test_runs_nobody_works_on_do_not_block_a_new_sync(
    live_api: LiveApi, engine: Engine, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    # A worker died mid-run (no lease), and a job vanished from a flushed Redis.
    crashed = add_run(engine, mailbox_id, status=SyncRunStatus.RUNNING, started_at=utcnow())
    lost = add_run(
        engine,
        mailbox_id,
        status=SyncRunStatus.QUEUED,
        trigger=SyncTrigger.API,
        created_at=utcnow() - timedelta(minutes=5),
    )

    fresh = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync").json()

    assert fresh["id"] not in {crashed, lost}
    assert fresh["status"] == "queued"
    gone = live_api.client.get(f"/v1/sync-runs/{lost}").json()
    assert (gone["status"], gone["error_code"]) == ("failed", "job_lost")


def test_a_sync_asked_while_a_scheduled_one_waits_is_filled_in_by_it(
    live_api: LiveApi, settings: Settings, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mail_user.append("INBOX", make_message(subject="waiting"))
    mailbox_id = add_mailbox(mail_user)

    async def schedule() -> None:
        pool = await create_queue(settings)
        try:
            assert await enqueue_sync(pool, mailbox_id)  # the scheduler's job: no run of its own
        finally:
            await pool.aclose()

    asyncio.run(schedule())
    response = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")

    assert response.status_code == 202
    run_id = response.json()["id"]
    run_worker(settings)
    runs = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()["items"]
    assert [(run["id"], run["status"]) for run in runs] == [(run_id, "succeeded")]
    assert runs[0]["counts"]["new"] == 1


def test_sync_run_history_pages_newest_first(
    live_api: LiveApi, engine: Engine, mail_user: MailUser, add_mailbox: MailboxFactory
) -> None:
    mailbox_id = add_mailbox(mail_user)
    other_mailbox = add_mailbox(mail_user, email_address="other@example.com")
    finished = utcnow()
    run_ids = [
        add_run(
            engine,
            mailbox_id,
            status=SyncRunStatus.SUCCEEDED,
            started_at=finished - timedelta(seconds=n + 1),
            finished_at=finished,
            new=n,
            bytes_fetched=100 * n,
        )
        for n in range(5)
    ]
    add_run(engine, other_mailbox)

    pages: list[list[int]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs", params=params).json()
        pages.append([item["id"] for item in page["items"]])
        cursor = page["next_cursor"]
        if cursor is None:
            break

    newest_first = run_ids[::-1]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
    oldest = live_api.client.get(f"/v1/sync-runs/{run_ids[0]}").json()
    assert (oldest["duration_seconds"], oldest["counts"]["new"], oldest["bytes"]) == (1.0, 0, 0)
    newest = live_api.client.get(f"/v1/sync-runs/{run_ids[4]}").json()
    assert (newest["duration_seconds"], newest["counts"]["new"], newest["bytes"]) == (5.0, 4, 400)
    bad_cursor = live_api.client.get(
        f"/v1/mailboxes/{mailbox_id}/sync-runs", params={"cursor": "bm9wZQ"}
    )
    assert bad_cursor.status_code == 422
    assert bad_cursor.json()["errors"][0]["field"] == "cursor"


def test_unknown_ids_are_404_problems(live_api: LiveApi) -> None:
    for response in (
        live_api.client.get("/v1/sync-runs/987654"),
        live_api.client.get("/v1/mailboxes/987654/sync-runs"),
        live_api.client.post("/v1/mailboxes/987654/sync"),
    ):
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "not_found"


def test_redis_down_at_startup_is_503_until_it_comes_up(
    redis_proxy: FaultProxy,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    redis_proxy.take_down()

    proxied = settings.model_copy(update={"redis_url": redis_url_through(redis_proxy)})
    with running_api(engine, proxied) as live_api:
        queued = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        ready = live_api.client.get("/readyz")
        healthy = live_api.client.get("/healthz")
        runs = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()["items"]
        redis_proxy.heal()
        after = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        ready_after = live_api.client.get("/readyz")

    assert queued.status_code == 503
    assert queued.json()["code"] == "queue_unavailable"
    assert int(queued.headers["retry-after"]) > 0
    assert runs == []
    assert (ready.status_code, ready.json()["code"]) == (503, "queue_unavailable")
    assert healthy.status_code == 200
    assert after.status_code == 202
    assert ready_after.status_code == 200


def test_redis_outage_while_serving_is_503_then_recovers(
    redis_proxy: FaultProxy,
    engine: Engine,
    settings: Settings,
    mail_user: MailUser,
    add_mailbox: MailboxFactory,
) -> None:
    mailbox_id = add_mailbox(mail_user)
    proxied = settings.model_copy(update={"redis_url": redis_url_through(redis_proxy)})
    with running_api(engine, proxied) as live_api:
        assert live_api.client.get("/readyz").status_code == 200

        redis_proxy.take_down()
        during = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        not_ready = live_api.client.get("/readyz")
        runs_during = live_api.client.get(f"/v1/mailboxes/{mailbox_id}/sync-runs").json()["items"]
        redis_proxy.heal()
        after = live_api.client.post(f"/v1/mailboxes/{mailbox_id}/sync")
        ready_after = live_api.client.get("/readyz")

    assert during.status_code == 503
    assert during.json()["code"] == "queue_unavailable"
    assert "retry-after" in during.headers
    assert runs_during == []  # the run made before the enqueue failed was deleted
    assert not_ready.json()["code"] == "queue_unavailable"
    assert after.status_code == 202
    assert ready_after.status_code == 200
