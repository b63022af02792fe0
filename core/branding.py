"""White-label branding and the public help entries.

One ``brand_settings`` row holds what staff set on Staff › Branding; until they do, the ``HOSTBAY_BRAND_*``
settings (first start) and then hostbay's own defaults apply. :func:`current` is what the panel, the status page,
page titles and e-mails read. Help entries are Markdown that staff edit; they are rendered with markdown-it-py and
sanitised with nh3 (an allow-list: no scripts, no inline styles, no event handlers), so a staff account cannot put
script into a public page.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from flask import current_app, g, has_app_context
from sqlalchemy import Boolean, Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from .db import db
from .errors import FieldError, UserError  # noqa: F401 - FieldError is imported from here too

DEFAULT_NAME = "hostbay"
DEFAULT_COLOR = "#0b5cad"
COLOR_RE = re.compile(r"^#[0-9a-fA-F]{6}$")


class BrandSettings(db.Model):
    __tablename__ = "brand_settings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    logo_url: Mapped[str | None] = mapped_column(String(500))
    favicon_url: Mapped[str | None] = mapped_column(String(500))
    color: Mapped[str] = mapped_column(String(7))
    support_email: Mapped[str | None] = mapped_column(String(200))
    footer_links: Mapped[str | None] = mapped_column(Text)  # one "Label | URL" a line


class HelpEntry(db.Model):
    __tablename__ = "help_entries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(80), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)  # Markdown
    position: Mapped[int] = mapped_column(Integer, default=0)
    published: Mapped[bool] = mapped_column(Boolean, default=True)


@dataclass(frozen=True)
class Brand:
    name: str = DEFAULT_NAME
    logo_url: str | None = None
    favicon_url: str | None = None
    color: str = DEFAULT_COLOR
    support_email: str | None = None
    footer_links: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def color_hover(self) -> str:
        return _mix(self.color, 0.15)


def contrast_with_white(color: str) -> float:
    """WCAG 2 contrast ratio of ``#rrggbb`` against white."""
    def lin(c: int) -> float:
        c = c / 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
    r, gr, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    lum = 0.2126 * lin(r) + 0.7152 * lin(gr) + 0.0722 * lin(b)
    return 1.05 / (lum + 0.05)


def _mix(color: str, amount: float) -> str:
    r, gr, b = (int(color[i:i + 2], 16) for i in (1, 3, 5))
    return "#%02x%02x%02x" % tuple(int(v * (1 - amount)) for v in (r, gr, b))


def check_color(color: str) -> str:
    color = (color or "").strip()
    if not COLOR_RE.match(color):
        raise FieldError("color", "The colour must look like #1a2b3c.")
    if contrast_with_white(color) < 4.5:
        raise FieldError("color", f"{color} is too light: white text on it would have a contrast of "
                        f"{contrast_with_white(color):.1f}:1, and at least 4.5:1 is needed to be readable.")
    return color.lower()


def check_url(url: str | None, what: str, field: str = "") -> str | None:
    url = (url or "").strip()
    if not url:
        return None
    if not (url.startswith("https://") or url.startswith("http://") or (url.startswith("/") and not url.startswith("//"))):
        raise FieldError(field, f"The {what} must be an http(s) address or a path on this panel (starting with /).")
    return url


def parse_links(text: str | None) -> tuple[tuple[str, str], ...]:
    links = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        label, sep, url = line.partition("|")
        if not sep or not label.strip():
            raise FieldError("footer_links",
                             f"Footer link line {line.strip()!r} must look like: Terms | https://example.com/terms")
        links.append((label.strip()[:60], check_url(url, "footer link", "footer_links") or "/"))
    return tuple(links)


def _from_env() -> Brand:
    cfg = current_app.config
    color = cfg.get("HOSTBAY_BRAND_COLOR") or DEFAULT_COLOR
    if not COLOR_RE.match(color) or contrast_with_white(color) < 4.5:
        current_app.logger.warning("HOSTBAY_BRAND_COLOR %r is not a #rrggbb colour with 4.5:1 contrast to white; "
                                   "using %s", color, DEFAULT_COLOR)
        color = DEFAULT_COLOR
    return Brand(name=cfg.get("HOSTBAY_BRAND_NAME") or DEFAULT_NAME, logo_url=cfg.get("HOSTBAY_BRAND_LOGO") or None,
                 color=color.lower())


def current() -> Brand:
    """The brand in force (cached per request)."""
    if has_app_context() and "hostbay_brand" in g:
        return g.hostbay_brand
    row = db.session.scalar(select(BrandSettings).order_by(BrandSettings.id).limit(1))
    if row is None:
        brand = _from_env()
    else:
        brand = Brand(name=row.name, logo_url=row.logo_url, favicon_url=row.favicon_url, color=row.color,
                      support_email=row.support_email, footer_links=parse_links(row.footer_links))
    if has_app_context():
        g.hostbay_brand = brand
    return brand


def save(*, name: str, logo_url: str | None, favicon_url: str | None, color: str, support_email: str | None,
         footer_links: str | None) -> BrandSettings:
    """Validate and store the staff's branding (the request commits)."""
    name = (name or "").strip()
    if not name or len(name) > 80:
        raise FieldError("name", "The company name is required (at most 80 characters).")
    support_email = (support_email or "").strip() or None
    if support_email and ("@" not in support_email or len(support_email) > 200 or any(c.isspace() for c in support_email)):
        raise FieldError("support_email", "The support e-mail must be an e-mail address.")
    parse_links(footer_links)
    row = db.session.scalar(select(BrandSettings).order_by(BrandSettings.id).limit(1)) or BrandSettings()
    row.name, row.color = name, check_color(color)
    row.logo_url, row.favicon_url = check_url(logo_url, "logo", "logo_url"), check_url(favicon_url, "favicon", "favicon_url")
    row.support_email, row.footer_links = support_email, (footer_links or "").strip() or None
    db.session.add(row)
    db.session.flush()
    g.pop("hostbay_brand", None)
    return row


# --- help entries ------------------------------------------------------------------------------------------------

ALLOWED_TAGS = {"p", "br", "strong", "em", "code", "pre", "ul", "ol", "li", "a", "h2", "h3", "h4", "blockquote",
                "table", "thead", "tbody", "tr", "th", "td", "hr"}


def render_markdown(text: str) -> str:
    """Markdown to sanitised HTML (raw HTML in the source is escaped, then nh3 keeps only the allow-list)."""
    import nh3
    from markdown_it import MarkdownIt

    html = MarkdownIt("commonmark", {"html": False}).enable("table").render(text or "")
    return nh3.clean(html, tags=ALLOWED_TAGS, attributes={"a": {"href", "title"}},
                     url_schemes={"http", "https", "mailto"}, link_rel="noopener noreferrer")


def slugify(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")[:80] or "entry"


def help_entries(*, published_only: bool = True) -> list[HelpEntry]:
    q = select(HelpEntry).order_by(HelpEntry.position, HelpEntry.id)
    if published_only:
        q = q.where(HelpEntry.published.is_(True))
    return list(db.session.scalars(q))


def save_help(entry: HelpEntry | None, *, title: str, body: str, position: int, published: bool) -> HelpEntry:
    title = (title or "").strip()
    if not title or len(title) > 200:
        raise UserError("The title is required (at most 200 characters).")
    if not (body or "").strip():
        raise UserError("The answer is required.")
    if entry is None:
        entry = HelpEntry(slug=_free_slug(slugify(title)))
        db.session.add(entry)
    entry.title, entry.body, entry.position, entry.published = title, body, position, published
    db.session.flush()
    return entry


def _free_slug(base: str) -> str:
    slug, n = base, 2
    while db.session.scalar(select(HelpEntry.id).where(HelpEntry.slug == slug)) is not None:
        slug, n = f"{base}-{n}", n + 1
    return slug


def seed_help() -> int:
    """Add hostbay's own answers once (an empty help table only); returns how many were added."""
    if db.session.scalar(select(HelpEntry.id).limit(1)) is not None:
        return 0
    from .help_seed import ENTRIES

    for pos, (title, body) in enumerate(ENTRIES):
        db.session.add(HelpEntry(slug=slugify(title), title=title, body=body, position=pos * 10, published=True))
    db.session.flush()
    return len(ENTRIES)
