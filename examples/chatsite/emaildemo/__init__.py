"""E-mail into chat rooms: mail to <room>@<domain> shows up in that room's chat."""
