"""Every rule about changing content: saving with revisions, publishing and scheduling,
archiving, deleting, restoring a revision; the editors' list and filters. Bodies are
rendered and sanitized here, at save time. What visitors see is `public.py`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from sqlalchemy import event, func, inspect, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.accounts.services.audit import Actor, record
from app.accounts.services.audit_view import AUDIT_RESOURCES, AuditResource, uuids
from app.content.models import Entry, Kind, Revision, Status, Tag
from app.content.services.events import (
    ENTRY_DELETED,
    ENTRY_PUBLISHED,
    ENTRY_UNPUBLISHED,
    ENTRY_UPDATED,
    emit_entry_event,
    is_announced,
)
from app.content.services.markdown import plain_text, render_markdown
from app.content.services.media import image_sizes
from app.content.services.public import is_public, now, visible_to_public
from app.core.errors import Conflict, DomainError, InvalidField, NotFound, only_if_valid
from app.core.events import PUBLIC_CHANGED, is_pending, mark_public_change
from app.core.numbers import INT32_MAX, INT32_MIN
from app.core.pagination import Page, PageRequest, paginate
from app.core.registry import KEEL
from app.core.times import utc_time

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
RESERVED_PAGE_SLUGS = {
    "admin",
    "api",
    "blog",
    "tags",
    "search",
    "static",
    "media",
    "health",
    "schema",
    "login",
    "logout",
    "register",
    "setup",
    "account",
    "reset",
    "feed.xml",
    "sitemap.xml",
    "robots.txt",
    "favicon.ico",
    "p",
}


class ContentError(DomainError):
    """A rule about content said no: one of the kinds below."""


class InvalidContent(ContentError, InvalidField):
    """A field of an entry (or of a filter over entries) breaks a rule."""


class ContentNotFound(ContentError, NotFound):
    """No such entry, revision, page or tag."""


class SlugTaken(ContentError, Conflict):
    """Another entry of the kind uses the address."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"Another {kind} already uses this address.", "slug")


def slugify(text: str, max_length: int = 120) -> str:
    """`Hello, World!` → `hello-world` (accents folded, at most `max_length` characters)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "untitled"


TAG_SLUG_MAX_LENGTH = 80
MAX_TAGS = 20
"""Tags per entry."""


def tag_slug(name: str) -> str:
    """A tag's address (`/tags/<slug>`). A 64-character name can fold into more (the
    ligature `ﬀ` is `ff`): the slug stays within its column."""
    return slugify(name, TAG_SLUG_MAX_LENGTH)


@dataclass
class EntryInput:
    """What an editor submits; every field is validated by `save_entry`."""

    kind: str = Kind.post.value
    title: str = ""
    slug: str = ""
    body_markdown: str = ""
    excerpt: str = ""
    meta_description: str = ""
    tags: list[str] = field(default_factory=list)
    nav_order: int | None = None


def check_entry(data: EntryInput) -> tuple[EntryInput, list[InvalidContent]]:
    """The entry's fields cleaned, and every rule they break (none: the list is empty)."""
    problems: list[InvalidContent] = []
    if data.kind not in (Kind.page.value, Kind.post.value):
        problems.append(InvalidContent("Choose page or post.", "kind"))
    title = data.title.strip()
    if not title:
        problems.append(InvalidContent("Give it a title.", "title"))
    if len(title) > 200:
        problems.append(InvalidContent("Use at most 200 characters.", "title"))
    slug = data.slug.strip().lower() or slugify(title)
    if not SLUG.match(slug) or len(slug) > 120:
        problems.append(InvalidContent("Use lowercase letters, digits and single dashes.", "slug"))
    elif data.kind == Kind.page.value and slug in RESERVED_PAGE_SLUGS:
        problems.append(
            InvalidContent("This address is used by the site itself; choose another.", "slug")
        )
    if len(data.body_markdown) > 200_000:
        problems.append(
            InvalidContent("The text is too long (200,000 characters at most).", "body_markdown")
        )
    if data.nav_order is not None and not INT32_MIN <= data.nav_order <= INT32_MAX:
        problems.append(
            InvalidContent(f"Use a number from {INT32_MIN:,} to {INT32_MAX:,}.", "nav_order")
        )
    tags: dict[str, str] = {}  # slug → name: tags that share an address are one tag
    for raw in data.tags:
        name = raw.strip()
        if not name:
            continue
        if len(name) > 64:
            problems.append(InvalidContent("Tags are at most 64 characters.", "tags"))
            break
        if any(unicodedata.category(char) == "Cc" for char in name):
            problems.append(InvalidContent("Tags cannot contain control characters.", "tags"))
            break
        tags.setdefault(tag_slug(name), name)
        if len(tags) > MAX_TAGS:
            problems.append(InvalidContent(f"Give at most {MAX_TAGS} tags.", "tags"))
            break
    cleaned = EntryInput(
        kind=data.kind,
        title=title,
        slug=slug,
        body_markdown=data.body_markdown,
        excerpt=data.excerpt.strip()[:500],
        meta_description=data.meta_description.strip()[:300],
        tags=list(tags.values()),
        nav_order=data.nav_order if data.kind == Kind.page.value else None,
    )
    return cleaned, problems


def _validated(data: EntryInput) -> EntryInput:
    cleaned, problems = check_entry(data)
    return only_if_valid(cleaned, problems)


def entry_input(
    fields: Mapping[str, str], kind: str, body: str = "body_markdown"
) -> tuple[EntryInput, InvalidContent | None]:
    """What text fields describe (the editor's form, a CSV row; the Markdown under `body`,
    tags separated by commas), and the problem of a nav order that is not a number."""
    order = (fields.get("nav_order") or "").strip()
    problem, nav_order = None, None
    try:
        nav_order = int(order) if order else None
    except ValueError:
        problem = InvalidContent("Enter a whole number, or leave it empty.", "nav_order")
    data = EntryInput(
        kind=kind,
        title=fields.get("title", ""),
        slug=fields.get("slug", ""),
        body_markdown=fields.get(body, "").replace("\r\n", "\n"),
        excerpt=fields.get("excerpt", ""),
        meta_description=fields.get("meta_description", ""),
        tags=[tag for tag in fields.get("tags", "").split(",") if tag.strip()],
        nav_order=nav_order,
    )
    return data, problem


async def _tags(session: AsyncSession, names: list[str]) -> list[Tag]:
    """The Tag rows of `names` (checked by `check_entry`: at most MAX_TAGS), new ones added."""
    slugs = {tag_slug(name): name for name in names}
    existing = {
        tag.slug: tag for tag in await session.scalars(select(Tag).where(Tag.slug.in_(slugs)))
    }
    found = []
    for slug, name in slugs.items():
        tag = existing.get(slug)
        if tag is None:
            tag = Tag(name=name, slug=slug)
            session.add(tag)
        found.append(tag)
    return found


async def taken_slugs(
    session: AsyncSession, kind: str, slugs: Collection[str], exclude: UUID | None = None
) -> set[str]:
    """Which of these addresses other entries of `kind` use already."""
    taken: set[str] = set()
    left = sorted(set(slugs))
    while left:  # in chunks: SQLite limits bound parameters
        some, left = left[:500], left[500:]
        query = select(Entry.slug).where(Entry.kind == kind, Entry.slug.in_(some))
        if exclude is not None:
            query = query.where(Entry.id != exclude)
        taken.update(await session.scalars(query))
    return taken


async def _ensure_free_slug(
    session: AsyncSession, kind: str, slug: str, exclude: UUID | None
) -> None:
    if await taken_slugs(session, kind, [slug], exclude):
        raise SlugTaken(kind)


EXCERPT_LENGTH = 300
META_DESCRIPTION_LENGTH = 160


def _own_text(given: str, stored: str, *, written: bool) -> str | None:
    """The author's own excerpt or meta description, or None when it is to be made from the
    body: none given, or the generated text handed back unchanged (a client that sends
    every field it read, an API PATCH that leaves the field out)."""
    if not given or (not written and given == stored):
        return None
    return given


async def save_entry(
    session: AsyncSession, actor: Actor, data: EntryInput, entry: Entry | None = None
) -> Entry:
    """Create or update an entry; every save keeps a revision and an audit entry. Only a
    public entry's save empties the page cache, and only a published or scheduled entry's
    is an event (`entry.updated`): drafts are nobody's business but editors'.
    Every rule is checked before `entry` changes; an address taken by a concurrent save
    (the unique index) rolls the transaction back and reloads `entry`."""
    data = _validated(data)
    public = entry is not None and visible_to_public(entry)
    announced = entry is not None and is_announced(entry)
    await _ensure_free_slug(session, data.kind, data.slug, entry.id if entry else None)
    creating = entry is None
    # Tags first: the queries autoflush, and a new entry must not be flushed before its
    # collection is set (setting it on a flushed entry would lazy-load, which async forbids).
    tags = await _tags(session, data.tags)
    if entry is None:
        entry = Entry(
            kind=data.kind,
            status=Status.draft.value,
            author_id=actor.user_id,
            view_count=0,
            excerpt="",
            meta_description="",
            excerpt_written=False,
            meta_description_written=False,
        )
        entry.tags = tags
        session.add(entry)
    entry.title = data.title
    entry.slug = data.slug
    entry.body_markdown = data.body_markdown
    entry.body_html = render_markdown(
        data.body_markdown, await image_sizes(session, data.body_markdown)
    )
    excerpt = _own_text(data.excerpt, entry.excerpt, written=entry.excerpt_written)
    entry.excerpt_written = excerpt is not None
    entry.excerpt = excerpt or plain_text(entry.body_html, EXCERPT_LENGTH)
    meta_description = _own_text(
        data.meta_description, entry.meta_description, written=entry.meta_description_written
    )
    entry.meta_description_written = meta_description is not None
    entry.meta_description = meta_description or plain_text(
        entry.body_html, META_DESCRIPTION_LENGTH
    )
    entry.tags = tags
    entry.nav_order = data.nav_order
    try:
        await session.flush()
    except IntegrityError:  # a concurrent save took the address since the check above
        await session.rollback()  # the failed flush ended the transaction: start clean
        if not creating:
            await session.refresh(entry)
        raise SlugTaken(data.kind) from None
    session.add(
        Revision(
            entry_id=entry.id,
            author_id=actor.user_id,
            author_name=actor.name,
            title=entry.title,
            body_markdown=entry.body_markdown,
            created_at=now(),
        )
    )
    if public:
        mark_public_change(session)
    if announced:
        emit_entry_event(session, ENTRY_UPDATED, entry)
    record(
        session,
        actor,
        "content.created" if creating else "content.updated",
        entry.kind,
        entry.id,
        title=entry.title,
        slug=entry.slug,
    )
    return entry


def _changes_public_pages(session: AsyncSession, entry: Entry) -> None:
    """Call before a change that takes `entry` away from visitors (unpublish, archive,
    delete): cached pages show it only if it is public now."""
    if visible_to_public(entry):
        mark_public_change(session)


def _withdrawn(session: AsyncSession, entry: Entry, status: Status) -> None:
    """Set `status` (draft, archived) on `entry`: taken from visitors now, or from the
    time it was scheduled for (`entry.unpublished` when it was published or scheduled)."""
    _changes_public_pages(session, entry)
    announced = is_announced(entry)
    entry.status = status.value
    if announced:
        emit_entry_event(session, ENTRY_UNPUBLISHED, entry)


@event.listens_for(Session, "before_flush")
def _authors_named_on_public_pages(session: Session, _context: object, _objects: object) -> None:
    """Public pages name an entry's author (a post page, the feed, the API, whose list
    filters by author): renaming or deleting someone who authors a public entry changes
    them. The accounts domain knows nothing of entries, so content watches the users a
    session writes, before the deletion leaves their entries without an author."""
    users = [user.id for user in session.deleted if isinstance(user, User)]
    users += [user.id for user in session.dirty if isinstance(user, User) and _renamed(user)]
    if not users or is_pending(session, PUBLIC_CHANGED):
        return
    authored = select(Entry.id).where(Entry.author_id.in_(users), is_public()).limit(1)
    if session.execute(authored).first() is not None:
        mark_public_change(session)


def _renamed(user: User) -> bool:
    """Whether the name shown for `user` (display name, else username) is changing."""
    attributes = inspect(user).attrs

    def before(name: str) -> str:
        history = attributes[name].history
        return str(history.deleted[0]) if history.deleted else str(getattr(user, name))

    return (before("display_name") or before("username")) != (user.display_name or user.username)


async def _comes_first(session: AsyncSession, entry: Entry, moment: datetime) -> bool:
    """Whether scheduling `entry` for `moment` makes it the next publication: cached pages
    expire at the next one (PageCache.publication_bound), which then moves earlier."""
    following = await session.scalar(
        select(func.min(Entry.published_at)).where(
            Entry.status == Status.scheduled.value,
            Entry.published_at > now(),
            Entry.id != entry.id,
        )
    )
    return following is None or moment < following


def keeps_publish_time(entry: Entry, at: datetime | None) -> bool:
    """Whether publishing `entry` (at `at`, or now) leaves it as it is: it is published
    already and no new time is given, so its date stays (readers, feeds and the order of
    the blog would otherwise see an old post as new)."""
    return at is None and visible_to_public(entry)


async def publish_entry(
    session: AsyncSession, actor: Actor, entry: Entry, at: datetime | None = None
) -> Entry:
    """Publish now, or schedule for `at` (a future time): public from then on, not before.
    An entry published already keeps its date unless `at` is given (`keeps_publish_time`)."""
    if keeps_publish_time(entry, at):
        return entry
    moment = at or now()
    if moment.tzinfo is None:
        raise InvalidContent("Give the publish time with its time zone.", "published_at")
    moment = utc_time(moment, "published_at")
    scheduled = moment > now()
    if visible_to_public(entry) or not scheduled or await _comes_first(session, entry, moment):
        mark_public_change(session)
    entry.status = Status.scheduled.value if scheduled else Status.published.value
    entry.published_at = moment
    emit_entry_event(session, ENTRY_PUBLISHED, entry)
    record(
        session,
        actor,
        "content.scheduled" if scheduled else "content.published",
        entry.kind,
        entry.id,
        published_at=moment.isoformat(),
    )
    return entry


async def unpublish_entry(session: AsyncSession, actor: Actor, entry: Entry) -> Entry:
    """Back to draft: invisible to visitors at once."""
    _withdrawn(session, entry, Status.draft)
    record(session, actor, "content.unpublished", entry.kind, entry.id)
    return entry


async def archive_entry(session: AsyncSession, actor: Actor, entry: Entry) -> Entry:
    _withdrawn(session, entry, Status.archived)
    record(session, actor, "content.archived", entry.kind, entry.id)
    return entry


async def delete_entry(session: AsyncSession, actor: Actor, entry: Entry) -> None:
    _changes_public_pages(session, entry)
    emit_entry_event(session, ENTRY_DELETED, entry)
    record(
        session, actor, "content.deleted", entry.kind, entry.id, title=entry.title, slug=entry.slug
    )
    await session.delete(entry)


async def get_entry(session: AsyncSession, entry_id: UUID) -> Entry:
    entry = await session.get(Entry, entry_id)
    if entry is None:
        raise ContentNotFound("No such entry.")
    return entry


async def entry_authors(session: AsyncSession) -> dict[UUID, str]:
    """Everyone who wrote an entry (display name or username by user id), by name: the
    admin list's author filter and the names in it."""
    wrote = select(Entry.author_id).where(Entry.author_id.is_not(None)).distinct()
    rows = await session.execute(
        select(User.id, User.display_name, User.username).where(User.id.in_(wrote))
    )
    names = {user_id: display or username for user_id, display, username in rows}
    return dict(sorted(names.items(), key=lambda item: item[1].casefold()))


@dataclass(frozen=True)
class EntryFilters:
    kind: str | None = None
    status: str | None = None
    author_id: UUID | None = None
    tag: str | None = None
    q: str | None = None
    public_only: bool = False
    """Only what a visitor may see (the API's answer to anonymous callers and viewers)."""


SEARCH_MAX = 200
"""Characters of a title/slug filter that count; the rest is cut, as the other searches do
(SQLite refuses a LIKE pattern over 50,000 bytes: a long `q` answered 500)."""


def title_pattern(q: str) -> str:
    """The LIKE pattern of the `q` filter (title or slug), for the ORM and the read path."""
    return f"%{q.strip()[:SEARCH_MAX]}%"


def check_filters(filters: EntryFilters) -> None:
    if filters.kind and filters.kind not in (Kind.page.value, Kind.post.value):
        raise InvalidContent("Choose page or post.", "kind")
    if filters.status and filters.status not in {s.value for s in Status}:
        raise InvalidContent("Choose draft, scheduled, published or archived.", "status")


async def list_entries(
    session: AsyncSession, filters: EntryFilters, page: PageRequest
) -> Page[Entry]:
    """The admin list: every status, newest change first."""
    check_filters(filters)
    query = select(Entry)
    if filters.public_only:
        query = query.where(is_public())
    if filters.kind:
        query = query.where(Entry.kind == filters.kind)
    if filters.status:
        query = query.where(Entry.status == filters.status)
    if filters.author_id:
        query = query.where(Entry.author_id == filters.author_id)
    if filters.tag:
        query = query.where(Entry.tags.any(Tag.slug == tag_slug(filters.tag)))
    if filters.q:
        pattern = title_pattern(filters.q)
        query = query.where(or_(Entry.title.ilike(pattern), Entry.slug.ilike(pattern)))
    return await paginate(session, query.order_by(Entry.updated_at.desc(), Entry.id), page)


async def list_revisions(session: AsyncSession, entry_id: UUID) -> list[Revision]:
    query = (
        select(Revision).where(Revision.entry_id == entry_id).order_by(Revision.created_at.desc())
    )
    return list((await session.scalars(query)).all())


async def get_revision(session: AsyncSession, entry: Entry, revision_id: UUID) -> Revision:
    revision = await session.get(Revision, revision_id)
    if revision is None or revision.entry_id != entry.id:
        raise ContentNotFound("No such revision of this entry.")
    return revision


async def restore_revision(
    session: AsyncSession, actor: Actor, entry: Entry, revision_id: UUID
) -> Entry:
    """Put a revision's text back (itself a save, so it leaves a new revision)."""
    revision = await get_revision(session, entry, revision_id)
    data = EntryInput(
        kind=entry.kind,
        title=revision.title,
        slug=entry.slug,
        body_markdown=revision.body_markdown,
        excerpt="",
        meta_description=entry.meta_description,
        tags=[t.name for t in entry.tags],
        nav_order=entry.nav_order,
    )
    entry = await save_entry(session, actor, data, entry)
    record(
        session, actor, "content.revision_restored", entry.kind, entry.id, revision=str(revision_id)
    )
    return entry


async def _entry_titles(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    query = select(Entry.id, Entry.title).where(Entry.id.in_(uuids(ids)))
    return {str(i): title for i, title in await session.execute(query)}


for _kind in Kind:
    AUDIT_RESOURCES.add(
        KEEL,
        AuditResource(_kind.value, _kind.value, _entry_titles, "admin:content_edit", "entry_id"),
    )
