"""The remote search's request and answer; terms are checked by the query builder itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from app.api.emails.schemas import Address
from app.api.request_models import WHOLE_NUMBER, IsoDate, RequestModel, WholeNumber
from app.imap import Address as ParsedAddress
from app.imap import ParsedMessage, SearchQueryBuilder
from app.sync import RemoteSearchCriteria, RemoteSearchResult

MAX_RESULTS = 500
Uid = Annotated[int, Field(ge=1, le=2**32 - 1), WHOLE_NUMBER]


def _accepted_by(add: Callable[[SearchQueryBuilder, str], SearchQueryBuilder]) -> AfterValidator:
    """Refuse a term the query builder refuses (CR, LF, NUL), so the 422 names the field."""

    def check(term: str | None) -> str | None:
        if term is not None:
            add(SearchQueryBuilder(), term)
        return term

    return AfterValidator(check)


class RemoteSearchRequest(RequestModel):
    """What to look for in one folder on the server; every criterion given must match."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    folder: str = Field(
        default="INBOX",
        min_length=1,
        max_length=1000,
        pattern=r"^[^\r\n\x00]+$",
        description="The folder's full name on the server, as `full_name` of the folder list.",
    )
    from_: Annotated[str | None, _accepted_by(SearchQueryBuilder.sender)] = Field(
        default=None, alias="from", min_length=1, max_length=1000, description="In From."
    )
    to: Annotated[str | None, _accepted_by(SearchQueryBuilder.to)] = Field(
        default=None, min_length=1, max_length=1000, description="In To."
    )
    cc: Annotated[str | None, _accepted_by(SearchQueryBuilder.cc)] = Field(
        default=None, min_length=1, max_length=1000, description="In Cc."
    )
    subject: Annotated[str | None, _accepted_by(SearchQueryBuilder.subject)] = Field(
        default=None, min_length=1, max_length=1000, description="In the subject."
    )
    body: Annotated[str | None, _accepted_by(SearchQueryBuilder.body)] = Field(
        default=None, min_length=1, max_length=1000, description="In the body."
    )
    text: Annotated[str | None, _accepted_by(SearchQueryBuilder.text)] = Field(
        default=None, min_length=1, max_length=1000, description="In the headers or the body."
    )
    since: IsoDate | None = Field(
        default=None, description="Received on or after this day (the server's time zone)."
    )
    before: IsoDate | None = Field(default=None, description="Received before this day.")
    seen: bool | None = None
    flagged: bool | None = None
    uid_from: Uid | None = Field(default=None, description="Lowest UID.")
    uid_to: Uid | None = Field(default=None, description="Highest UID.")
    limit: WholeNumber = Field(
        default=50, ge=1, le=MAX_RESULTS, description="Newest matches returned."
    )

    @field_validator("uid_to")
    @classmethod
    def _range_is_ordered(cls, uid_to: int | None, info: ValidationInfo) -> int | None:
        uid_from = info.data.get("uid_from")
        if uid_to is not None and uid_from is not None and uid_to < uid_from:
            raise ValueError("must not be below uid_from")
        return uid_to

    def criteria(self) -> RemoteSearchCriteria:
        return RemoteSearchCriteria(
            folder=self.folder,
            sender=self.from_,
            to=self.to,
            cc=self.cc,
            subject=self.subject,
            body=self.body,
            text=self.text,
            since=self.since,
            before=self.before,
            seen=self.seen,
            flagged=self.flagged,
            uid_from=self.uid_from,
            uid_to=self.uid_to,
            limit=self.limit,
        )


class RemoteMessage(BaseModel):
    """A message found on the server (it may not be synced locally)."""

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True)

    uid: int
    message_id: str | None
    subject: str
    from_: Address | None = Field(alias="from")
    to: list[Address]
    cc: list[Address]
    date: datetime | None = Field(description="The Date header.")
    seen: bool
    flagged: bool
    size: int = Field(description="RFC822.SIZE in bytes.")
    has_attachments: bool

    @classmethod
    def of(cls, message: ParsedMessage) -> RemoteMessage:
        return cls.model_validate(
            {
                "uid": message.uid,
                "message_id": message.message_id,
                "subject": message.subject,
                "from_": _address(message.sender) if message.sender else None,
                "to": [_address(address) for address in message.to],
                "cc": [_address(address) for address in message.cc],
                "date": message.date,
                "seen": message.seen,
                "flagged": message.flagged,
                "size": message.size,
                "has_attachments": message.has_attachments,
            }
        )


class RemoteSearchPage(BaseModel):
    """The newest `limit` matches, newest (highest UID) first, and how many matched in all."""

    items: list[RemoteMessage]
    total: int

    @classmethod
    def of(cls, result: RemoteSearchResult) -> RemoteSearchPage:
        return cls(
            items=[RemoteMessage.of(message) for message in result.messages], total=result.total
        )


def _address(address: ParsedAddress) -> Address:
    return Address(name=address.name or None, email=address.email)
