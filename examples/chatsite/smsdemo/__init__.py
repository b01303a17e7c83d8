"""SMS demo app: a Twilio auto-responder (see ``docs/sms.md``)."""
