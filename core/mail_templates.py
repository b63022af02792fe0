"""Every e-mail hostbay sends, in the installation's brand: a plain-text part and an HTML alternative built from
the same text (so both always say the same), the company name as the sender's display name and in the footer,
the logo and primary colour in the HTML part. Used by :mod:`hostbay.core.mailer` and :mod:`hostbay.core.notices`."""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import formataddr, parseaddr

from jinja2 import Environment

_env = Environment(autoescape=True)

HTML = _env.from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>{{ subject }}</title></head>
<body style="margin:0;padding:0;background:#f6f8fa;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#1b1f24">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="background:#f6f8fa"><tr><td align="center" style="padding:24px 12px">
<table role="presentation" width="100%" cellpadding="0" cellspacing="0" style="max-width:600px;background:#ffffff;border:1px solid #d0d7de;border-radius:8px">
<tr><td style="background:{{ brand.color }};color:#ffffff;padding:16px 24px;border-radius:8px 8px 0 0;font-size:20px;font-weight:700">
{% if logo %}<img src="{{ logo }}" alt="{{ brand.name }}" height="32" style="height:32px;border:0">{% else %}{{ brand.name }}{% endif %}</td></tr>
<tr><td style="padding:24px;font-size:16px;line-height:1.5;overflow-wrap:anywhere;word-break:break-word">
<h1 style="font-size:20px;margin:0 0 16px">{{ subject }}</h1>
{% for para in paragraphs %}<p style="margin:0 0 12px">{{ para }}</p>
{% endfor %}</td></tr>
<tr><td style="padding:16px 24px;border-top:1px solid #d0d7de;color:#57606a;font-size:14px;overflow-wrap:anywhere;word-break:break-word">
{{ brand.name }}{% if brand.support_email %} · <a href="mailto:{{ brand.support_email }}" style="color:{{ brand.color }}">{{ brand.support_email }}</a>{% endif %}
{% for label, url in links %} · <a href="{{ url }}" style="color:{{ brand.color }}">{{ label }}</a>{% endfor %}
</td></tr></table></td></tr></table></body></html>""")

_URL = re.compile(r"(https?://[^\s<>\"]+)")


def _linkify(text: str):
    """Paragraph text with its URLs as links (escaped; Markup keeps the anchors)."""
    from markupsafe import Markup, escape

    out, pos = [], 0
    for m in _URL.finditer(text):
        out.append(escape(text[pos:m.start()]))
        url = m.group(1)
        out.append(Markup('<a href="%s">%s</a>') % (url, url))
        pos = m.end()
    out.append(escape(text[pos:]))
    return Markup("").join(out).replace("\n", Markup("<br>"))


def _absolute(url: str | None, base: str) -> str | None:
    if not url:
        return None
    return url if url.startswith("http") else base.rstrip("/") + url


def build(to: str, subject: str, body: str, *, sender: str | None = None) -> EmailMessage:
    """A branded message: ``body`` (plain text) is the text part and, paragraph by paragraph, the HTML part."""
    from flask import current_app

    from . import branding

    brand = branding.current()
    base = current_app.config.get("HOSTBAY_BASE_URL") or ""
    msg = EmailMessage()
    name, addr = parseaddr(sender or current_app.config.get("HOSTBAY_MAIL_FROM") or "hostbay@localhost")
    msg["From"] = formataddr((name or brand.name, addr))
    msg["To"] = to
    msg["Subject"] = subject
    footer = "\n\n-- \n" + brand.name + (f" · {brand.support_email}" if brand.support_email else "")
    msg.set_content(body.rstrip() + footer)
    paragraphs = [_linkify(p.strip()) for p in re.split(r"\n\s*\n", body.strip()) if p.strip()]
    links = [(label, _absolute(url, base)) for label, url in brand.footer_links]
    msg.add_alternative(HTML.render(subject=subject, brand=brand, logo=_absolute(brand.logo_url, base),
                                    paragraphs=paragraphs, links=links), subtype="html")
    return msg
