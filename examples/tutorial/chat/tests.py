"""Tests of the tutorial chat, written as a Channels project writes them, with ``switchboard``
in the imports. Run them with ``python manage.py test chat``.

The communicator tests drive the real routing (``mysite.asgi.application``: origin check,
sessions, URL routing) without a server; the live-server tests start a real gateway and
worker and talk to them over sockets, as a browser would (the tutorial uses Selenium;
here a ``websockets`` client stands in for the browser's WebSocket).
"""

import asyncio
import json
import urllib.request

import websockets
from django.test import TestCase
from mysite.asgi import application

from switchboard.layers import get_channel_layer
from switchboard.testing import SwitchboardLiveServerTestCase, WebsocketCommunicator

# A safety net for slow machines, not a speed requirement.
TIMEOUT = 10
# Django's test runner allows the host "testserver"; a browser on the page sends its origin.
ORIGIN = [(b"origin", b"http://testserver")]


class ChatConsumerTests(TestCase):
    async def connect(self, room: str) -> WebsocketCommunicator:
        communicator = WebsocketCommunicator(application, f"/ws/chat/{room}/", headers=ORIGIN)
        connected, _ = await communicator.connect(TIMEOUT)
        self.assertTrue(connected)
        return communicator

    async def test_message_reaches_everyone_in_the_room(self) -> None:
        alice = await self.connect("lobby")
        bob = await self.connect("lobby")
        await alice.send_json_to({"message": "hello"})
        self.assertEqual(await alice.receive_json_from(TIMEOUT), {"message": "hello"})
        self.assertEqual(await bob.receive_json_from(TIMEOUT), {"message": "hello"})
        await alice.disconnect(timeout=TIMEOUT)
        await bob.disconnect(timeout=TIMEOUT)

    async def test_rooms_are_separate(self) -> None:
        lobby = await self.connect("lobby")
        kitchen = await self.connect("kitchen")
        await lobby.send_json_to({"message": "only lobby"})
        self.assertEqual(await lobby.receive_json_from(TIMEOUT), {"message": "only lobby"})
        self.assertTrue(await kitchen.receive_nothing())
        await lobby.disconnect(timeout=TIMEOUT)
        await kitchen.disconnect(timeout=TIMEOUT)

    async def test_group_message_from_outside_the_consumer(self) -> None:
        room = await self.connect("news")
        await get_channel_layer().group_send("chat_news", {"type": "chat.message", "message": "from a view"})
        self.assertEqual(await room.receive_json_from(TIMEOUT), {"message": "from a view"})
        await room.disconnect(timeout=TIMEOUT)

    async def test_other_sites_cannot_connect(self) -> None:
        communicator = WebsocketCommunicator(application, "/ws/chat/lobby/", headers=[(b"origin", b"http://evil.example")])
        connected, _ = await communicator.connect(TIMEOUT)
        self.assertFalse(connected)

    async def test_unknown_path_is_refused(self) -> None:
        communicator = WebsocketCommunicator(application, "/ws/nowhere/", headers=ORIGIN)
        with self.assertRaises(ValueError):
            await communicator.connect(TIMEOUT)


class ChatLiveTests(SwitchboardLiveServerTestCase):
    def test_room_page_and_two_clients_chat(self) -> None:
        with urllib.request.urlopen(f"{self.live_server_url}/chat/lobby/", timeout=TIMEOUT) as response:
            page = response.read().decode()
        self.assertIn('"room-name"', page)
        self.assertIn("/ws/chat/", page)
        asyncio.run(self.chat())

    async def chat(self) -> None:
        url = f"{self.live_server_ws_url}/ws/chat/lobby/"
        origin = self.live_server_url
        async with websockets.connect(url, origin=origin) as alice, websockets.connect(url, origin=origin) as bob:
            await alice.send(json.dumps({"message": "hi bob"}))
            for client in (alice, bob):
                self.assertEqual(json.loads(await asyncio.wait_for(client.recv(), TIMEOUT)), {"message": "hi bob"})
