"""The Channels promises end to end: logins on WebSockets, origin checks, server-sent events
beside Django views, and background tasks on a named channel — in split mode (gateway and
workers over Redis, the named channel on its own worker) and one-process mode.
"""

from __future__ import annotations

import json

import pytest
from websockets.exceptions import InvalidStatus

from .conftest import Deployment
from .e2e_clients import EventStream, http, recv_json, ws

pytestmark = pytest.mark.e2e


# -- sessions and auth --------------------------------------------------------------------


async def test_logged_in_user_posts_and_anonymous_reader_receives(deployment: Deployment) -> None:
    session = deployment.login("alice")
    async with ws(deployment, "/ws/chat/auth/") as reader, ws(deployment, "/ws/chat/auth/", session) as alice:
        await alice.send(json.dumps({"message": "hello, readers"}))
        assert await recv_json(alice) == {"message": "hello, readers", "user": "alice"}
        assert await recv_json(reader) == {"message": "hello, readers", "user": "alice"}


async def test_anonymous_post_is_refused_and_not_broadcast(deployment: Deployment) -> None:
    session = deployment.login("bob")
    async with ws(deployment, "/ws/chat/guarded/") as anonymous, ws(deployment, "/ws/chat/guarded/", session) as bob:
        await anonymous.send(json.dumps({"message": "let me in"}))
        assert await recv_json(anonymous) == {"error": "log in to post"}
        # Had the refused post been broadcast, it would reach bob before his own message.
        await bob.send(json.dumps({"message": "after the refusal"}))
        assert await recv_json(bob) == {"message": "after the refusal", "user": "bob"}
        assert await recv_json(anonymous) == {"message": "after the refusal", "user": "bob"}


async def test_bad_session_cookie_is_just_anonymous(deployment: Deployment) -> None:
    async with ws(deployment, "/ws/chat/auth/", "forged-or-expired-session-key") as socket:
        await socket.send(json.dumps({"message": "hi"}))
        assert await recv_json(socket) == {"error": "log in to post"}


def test_wrong_password_gets_no_session(deployment: Deployment) -> None:
    assert deployment.try_login("alice", "not her password") is None
    # Without the CSRF token, Django's own check refuses before the password is looked at.
    assert http(deployment, "/accounts/login/", data=b"username=alice&password=alice-password")[0] == 403


# -- origin checks ------------------------------------------------------------------------


@pytest.mark.parametrize("origin", ["http://evil.example", "null", None], ids=["cross-site", "null", "missing"])
async def test_disallowed_origin_is_rejected_403(origin: str | None, deployment: Deployment) -> None:
    # Even with a valid session: a page on another site must not act as the user.
    session = deployment.login("alice")
    with pytest.raises(InvalidStatus) as rejected:
        async with ws(deployment, "/ws/chat/lobby/", session, origin=origin):
            pass
    assert rejected.value.response.status_code == 403
    assert b"origin" in rejected.value.response.body


async def test_other_allowed_host_origin_is_accepted(deployment: Deployment) -> None:
    # ALLOWED_HOSTS names hosts, not ports or schemes: any page served as localhost may connect.
    async with ws(deployment, "/ws/chat/lobby/", origin="https://localhost:4443") as socket:
        await socket.send(json.dumps({"message": "x"}))
        assert await recv_json(socket) == {"error": "log in to post"}


# -- server-sent events beside Django views ----------------------------------------------


async def test_event_stream_receives_chat_messages_posted_over_websocket(deployment: Deployment) -> None:
    stream = await EventStream.open(deployment, "/events/news/")
    try:
        assert stream.status == 200
        assert stream.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert stream.headers.get("transfer-encoding") == "chunked"
        assert await stream.next_block() == ": subscribed"  # the consumer is in the group now
        async with ws(deployment, "/ws/chat/news/", deployment.login("alice")) as alice:
            for text in ("first", "second\nline"):
                await alice.send(json.dumps({"message": text}))
                assert await stream.next_data() == {"message": text, "user": "alice"}
        # A plain Django view still answers beside the stream, from the same URLRouter.
        assert http(deployment, "/api/echo/?beside=sse")[0] == 200
    finally:
        await stream.close()


async def test_event_stream_refuses_bad_rooms_and_methods(deployment: Deployment) -> None:
    stream = await EventStream.open(deployment, "/events/no%20such%20room/")
    await stream.close()
    assert stream.status == 404
    assert http(deployment, "/events/news/", data=b"x")[0] == 405


async def test_closed_event_stream_leaves_the_group(deployment: Deployment) -> None:
    # A stream that went away must not break the room for those who stay.
    stream = await EventStream.open(deployment, "/events/leavers/")
    assert await stream.next_block() == ": subscribed"
    await stream.close()
    async with ws(deployment, "/ws/chat/leavers/", deployment.login("bob")) as bob:
        await bob.send(json.dumps({"message": "anyone?"}))
        assert await recv_json(bob) == {"message": "anyone?", "user": "bob"}


# -- background tasks on a named channel --------------------------------------------------


def wait_for_thumbnail(deployment: Deployment, url: str) -> dict[str, object]:
    jobs: list[dict[str, object]] = []

    def done() -> bool:
        status, body = http(deployment, url)
        assert status == 200, body
        jobs.append(json.loads(body))
        return jobs[-1]["status"] == "done"

    deployment.wait_until_sync(done, 20, "the thumbnail to be made")
    return dict(jobs[-1])


def test_view_queues_a_thumbnail_that_the_named_channel_worker_makes(deployment: Deployment) -> None:
    status, body = http(deployment, "/api/thumbnail/", data=json.dumps({"text": "Ada Lovelace"}).encode())
    assert status == 202, body
    queued = json.loads(body)
    assert queued["status"] == "queued" and queued["svg"] is None
    job = wait_for_thumbnail(deployment, str(queued["url"]))
    assert ">AL</text></svg>" in str(job["svg"])
    # Split mode: done by `switchboard worker thumbnails`, not the worker serving the view.
    maker = "thumbnails" if deployment.mode == "split" else "run"
    assert str(job["made_by"]).rsplit(":", 1)[1] == str(deployment.processes[maker].pid)


def test_thumbnail_view_refuses_bad_input(deployment: Deployment) -> None:
    for data in (b"not json", b"{}", b'{"text": ""}', json.dumps({"text": "x" * 201}).encode(), b'{"text": 5}'):
        status, body = http(deployment, "/api/thumbnail/", data=data)
        assert status == 400, (data, body)
    assert http(deployment, "/api/thumbnail/")[0] == 405
    assert http(deployment, "/api/thumbnail/999999/")[0] == 404
