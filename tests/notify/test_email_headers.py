"""A stored address that cannot be a mail header fails its delivery for good, alone.

The API refuses such addresses; one stored before that (or written by other
means) must not raise out of the dispatcher and stop every later delivery.
"""

from __future__ import annotations

import pytest

from app.notify.email import MailNotSent, SmtpServer, send_mail
from app.notify.messages import NoticeMessage

MESSAGE = NoticeMessage("A mailbox can no longer sign in", "text", "<p>html</p>")
NOWHERE = SmtpServer.from_url("smtp://127.0.0.1:9", allow_private_hosts=True, deadline_seconds=5)


@pytest.mark.parametrize("separator", ["\r\nBcc: x@evil.test", "\x1c", "\u2028"])
def test_a_recipient_with_a_line_separator_is_a_permanent_failure(separator: str) -> None:
    with pytest.raises(MailNotSent) as refused:
        send_mail(NOWHERE, "bridge@crm.test", f"owner{separator}@crm.test", MESSAGE)

    assert refused.value.permanent
    assert str(refused.value) == "a header value holds a line break"
