"""Mail a chat room: a message to ``lobby@chat.example.com`` appears in room ``lobby``.

With the smtp plugin enabled (see docs/smtp.md), try it from a shell::

    python - <<'MAIL'
    import smtplib
    from email.message import EmailMessage
    m = EmailMessage()
    m["From"], m["To"], m["Subject"] = "me@example.org", "lobby@chat.example.com", "Hello room"
    m.set_content("Sent by e-mail.")
    with smtplib.SMTP("127.0.0.1", 2525) as s:
        s.send_message(m)
    MAIL

and watch http://127.0.0.1:8000/chat/lobby/ (the chat example's page).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from asgiref.sync import async_to_sync
from showcase.feed import publish_sync

from switchboard.consumers.email import ReceivedEmail, SyncEmailConsumer

logger = logging.getLogger("emaildemo")

# Group names allow [A-Za-z0-9-_.]; a local part with anything else is no room name.
_ROOM_RE = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


def room_of(address: str) -> str | None:
    """The chat room an envelope recipient names (its local part), if it can be one."""
    local_part = address.rpartition("@")[0]
    return local_part.lower() if _ROOM_RE.match(local_part) else None


class MailToChatConsumer(SyncEmailConsumer):
    """Posts a one-line summary of each e-mail to the chat room of each recipient.

    Sync on purpose: a real inbox would save the message with the ORM here. Stateless, as
    every e-mail consumer must be (messages are spread over all workers).
    """

    def email_received(self, message: dict[str, Any]) -> None:
        email = ReceivedEmail.from_message(message)
        summary = f"✉ {email.from_ or email.mail_from}: {email.subject or '(no subject)'}"
        if email.text:
            summary += " — " + " ".join(email.text.split())[:200]
        if email.attachments:
            summary += f" [{len(email.attachments)} attachment(s)]"
        rooms = {room for room in map(room_of, email.rcpt_tos) if room}
        assert self.channel_layer is not None
        for room in sorted(rooms):
            async_to_sync(self.channel_layer.group_send)(f"chat.{room}", {"type": "chat.message", "message": summary})
        publish_sync(self.channel_layer, "email", f"{summary} → {', '.join(sorted(rooms)) or 'no room'}")
        logger.info("e-mail %s from %s posted to %s", email.message_id, email.mail_from, sorted(rooms) or "no room")
