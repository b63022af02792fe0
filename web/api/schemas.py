"""marshmallow schemas of the API. Customer schemas expose public UUIDs only (no row ids, nodes, driver refs)."""

from __future__ import annotations

import marshmallow as ma
from marshmallow import fields as f
from marshmallow import validate as v

from hostbay.core.catalog import CYCLES

from .common import UtcDateTime, page_schema


def _has_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


class Strict(ma.Schema):
    """Every API input: unknown fields are refused, and so are NUL characters (no database stores them)."""

    class Meta:
        ordered = True

    @ma.pre_load
    def _no_nul(self, data, **kwargs):
        if _has_nul(data):
            raise ma.ValidationError("Text may not contain NUL characters.")
        return data


# --- customer ----------------------------------------------------------------------------------------------------

class PackageSchema(Strict):
    uuid = f.String(required=True)
    slug = f.String(required=True)
    name = f.String(required=True)
    kind = f.String(required=True)
    vcpus = f.Integer(required=True)
    memory_mib = f.Integer(required=True)
    disk_gib = f.Integer(required=True)
    ipv4_count = f.Integer(required=True)
    ipv6 = f.Boolean(required=True)
    port_speed_mbit = f.Integer(required=True)
    iso_quota_count = f.Integer(required=True, allow_none=True,
                                metadata={"description": "ISO images a service of this package may keep; null: the "
                                                         "account's or the configured default"})
    iso_quota_bytes = f.Integer(required=True, allow_none=True,
                                metadata={"description": "ISO space in bytes; null: the account's or the configured "
                                                         "default"})
    prices = f.Method("_prices", required=True, metadata={"type": "object", "additionalProperties":
                                                           {"type": "integer"},
                                                           "description": "Price in cents per cycle"})

    def _prices(self, obj):
        return {p.cycle: p.price_cents for p in obj.prices}


class ImageSchema(Strict):
    uuid = f.String(required=True)
    slug = f.String(required=True)
    name = f.String(required=True)


def _datacenter(service):
    from hostbay.core import dctasks

    if service.kind != "dedicated":
        return []
    return [{**w, "at": w["at"].isoformat() + "Z"} for w in dctasks.customer_view(service)]


_DC_ITEM = {"type": "object", "required": ["what", "status", "state", "at"], "additionalProperties": False,
            "properties": {"what": {"type": "string"}, "status": {"type": "string"},
                           "state": {"type": "string", "enum": ["open", "in_progress", "done", "failed"]},
                           "at": {"type": "string", "format": "date-time"}}}


class ServiceSchema(Strict):
    uuid = f.String(required=True)
    hostname = f.String(required=True)
    kind = f.String(required=True)
    state = f.String(required=True)
    state_label = f.String(attribute="label", required=True)
    busy = f.Boolean(required=True)
    package = f.Function(lambda s: s.package.uuid, required=True, metadata={"type": "string"})
    package_name = f.Function(lambda s: s.package.name, required=True, metadata={"type": "string"})
    cycle = f.String(required=True)
    price_cents = f.Integer(required=True)
    renews_at = UtcDateTime(required=True)
    created_at = UtcDateTime(required=True)
    cancel_at_period_end = f.Boolean(required=True)
    actions = f.Function(lambda s: sorted(s.actions_for(staff=False)), required=True,
                         metadata={"type": "array", "items": {"type": "string"}})
    datacenter = f.Function(_datacenter, required=True,
                            metadata={"type": "array", "items": _DC_ITEM,
                                      "description": "dedicated servers: work queued for or done by the "
                                                     "datacenter team, in plain words (last 5)"})


class PowerSchema(Strict):
    service = f.String(required=True)
    power = f.String(required=True, metadata={"description": "running, stopped, paused, missing, unknown (could "
                                                             "not be read) or manual (switched by the datacenter "
                                                             "team)"})
    label = f.String(required=True)
    checked_at = UtcDateTime(required=True, metadata={"description": "when the reading was taken"})
    age_seconds = f.Integer(required=True, metadata={"description": "age of the reading (at most 30 s)"})
    actions = f.List(f.String(), required=True, metadata={"description": "power actions allowed in this state"})


class OperationSchema(Strict):
    id = f.String(required=True)
    title = f.String(required=True)
    state = f.String(required=True)
    progress_pct = f.Integer(required=True)
    progress_text = f.String(required=True)
    finished = f.Boolean(required=True)
    error = f.Function(lambda o: o.customer_error if o.state == "failed" else None, allow_none=True,
                       required=True, metadata={"type": "string"})
    created_at = UtcDateTime(required=True)


class ActionArgs(Strict):
    image = f.String(metadata={"description": "reinstall: image UUID (default: the current image)"})
    when = f.String(validate=v.OneOf(["end", "now"]), metadata={"description": "cancel: end of period or now"})
    confirm_hostname = f.String(validate=v.Length(max=253), metadata={
        "description": "reinstall and cancel now erase the server: the service's hostname, typed as confirmation"})


class ActionResultSchema(Strict):
    service = f.Nested(ServiceSchema, required=True)
    operation = f.Nested(OperationSchema, allow_none=True, required=True)


class ChangeArgs(Strict):
    package = f.String(required=True, metadata={"description": "UUID of the new package"})


class ApplyChangeArgs(ChangeArgs):
    quote = f.String(required=True, metadata={"description": "The `quote` token of a quote for this package "
                                                             "(valid 5 minutes): the amount charged or credited"})
    confirm_hostname = f.String(metadata={"description": "Required when the new disk is smaller: the service's "
                                                         "hostname, confirming that its data is erased."})


class QuoteSchema(Strict):
    """A signed quote (core.quotes.SignedQuote): the amounts and the token that applies exactly them."""

    package = f.Function(lambda q: q.quote.new_package.uuid, required=True, metadata={"type": "string"})
    package_name = f.Function(lambda q: q.quote.new_package.name, required=True, metadata={"type": "string"})
    old_price_cents = f.Function(lambda q: q.quote.old_price_cents, required=True, metadata={"type": "integer"})
    new_price_cents = f.Function(lambda q: q.quote.new_price_cents, required=True, metadata={"type": "integer"})
    amount_cents = f.Function(lambda q: q.quote.amount_cents, required=True,
                              metadata={"type": "integer", "description": "+ charged now, - credited to the wallet"})
    disk_shrinks = f.Function(lambda q: q.quote.disk_shrinks, required=True,
                              metadata={"type": "boolean", "description": "true: the server is rebuilt, data "
                                                                          "erased; apply needs confirm_hostname"})
    at = f.Function(lambda q: q.quote.at.isoformat() + "Z", required=True,
                    metadata={"type": "string", "format": "date-time"})
    renews_at = f.Function(lambda q: q.quote.service.renews_at.isoformat() + "Z", required=True,
                           metadata={"type": "string", "format": "date-time"})
    quote = f.Function(lambda q: q.token, required=True,
                       metadata={"type": "string", "description": "Pass it to `POST .../package-changes` to apply "
                                                                  "exactly this amount"})
    expires_at = f.Function(lambda q: q.expires_at.isoformat() + "Z", required=True,
                            metadata={"type": "string", "format": "date-time"})


class WalletSchema(Strict):
    balance_cents = f.Integer(required=True)
    refundable_cents = f.Integer(required=True, metadata={"description": "the most a refund request may ask for"})
    currency = f.String(required=True)


class LedgerEntrySchema(Strict):
    uuid = f.String(required=True)
    kind = f.String(required=True)
    amount_cents = f.Integer(required=True)
    balance_after_cents = f.Integer(required=True)
    description = f.String(required=True)
    created_at = UtcDateTime(required=True)


class RefundArgs(Strict):
    amount_cents = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10 ** 9))
    reason = f.String(required=True, validate=v.Length(min=1, max=5000))
    payout_details = f.String(validate=v.Length(max=500))


class RefundRequestSchema(Strict):
    uuid = f.String(required=True)
    amount_cents = f.Integer(required=True)
    reason = f.String(required=True)
    state = f.String(required=True)
    created_at = UtcDateTime(required=True)


class TopupArgs(Strict):
    gateway = f.String(required=True, validate=v.Length(min=1, max=64))
    amount_cents = f.Integer(required=True, strict=True, validate=v.Range(min=1, max=10 ** 9))


class TopupSchema(Strict):
    uuid = f.String(required=True)
    gateway = f.String(required=True)
    amount_cents = f.Integer(required=True)
    status = f.String(required=True)
    checkout_url = f.String(allow_none=True, required=True)
    created_at = UtcDateTime(required=True)


class OrderArgs(Strict):
    package = f.String(required=True, validate=v.Length(min=1, max=64))
    cycle = f.String(required=True, validate=v.OneOf(list(CYCLES)))
    hostname = f.String(required=True, validate=v.Length(min=1, max=253))
    image = f.String(validate=v.Length(max=64), metadata={"description": "image UUID (VPS packages)"})
    ssh_keys = f.List(f.String(validate=v.Length(max=64)), validate=v.Length(max=20), load_default=list)


class SshKeySchema(Strict):
    uuid = f.String(required=True)
    name = f.String(required=True)
    fingerprint = f.String(required=True)
    public_key = f.String(required=True)
    created_at = UtcDateTime(required=True)


class SshKeyArgs(Strict):
    name = f.String(required=True, validate=v.Length(min=1, max=80))
    public_key = f.String(required=True, validate=v.Length(min=1, max=16000))


class IsoSchema(Strict):
    uuid = f.String(required=True)
    name = f.String(required=True)
    size_bytes = f.Integer(required=True)
    sha256 = f.String(required=True)
    state = f.String(required=True)
    created_at = UtcDateTime(required=True)


class IsoUploadArgs(Strict):
    filename = f.String(required=True, validate=v.Length(min=1, max=200))


class MountArgs(Strict):
    iso = f.String(required=True, validate=v.Length(min=1, max=64))


class AddressSchema(Strict):
    address = f.String(required=True)
    prefix = f.Integer(required=True)
    version = f.Integer(required=True)
    ptr = f.String(allow_none=True, required=True)


class RdnsArgs(Strict):
    hostname = f.String(required=True, allow_none=True, validate=v.Length(max=253),
                        metadata={"description": "PTR host name; null or empty removes it"})


class RdnsSchema(Strict):
    uuid = f.String(required=True)
    address = f.Function(lambda r: r.address.address if getattr(r, "address", None) is not None else "",
                         required=True, metadata={"type": "string"})
    hostname = f.String(allow_none=True, required=True)
    state = f.String(required=True)


class TicketMessageSchema(Strict):
    staff = f.Boolean(required=True)
    body = f.String(required=True)
    created_at = UtcDateTime(required=True)


class TicketSchema(Strict):
    uuid = f.String(required=True)
    subject = f.String(required=True)
    status = f.String(required=True)
    service = f.Function(lambda t: t.service.uuid if t.service is not None else None, allow_none=True,
                         required=True, metadata={"type": "string"})
    created_at = UtcDateTime(required=True)
    updated_at = UtcDateTime(required=True)


class TicketDetailSchema(TicketSchema):
    messages = f.List(f.Nested(TicketMessageSchema), required=True)


class TicketArgs(Strict):
    subject = f.String(required=True, validate=v.Length(min=1, max=200))
    body = f.String(required=True, validate=v.Length(min=1, max=10000))
    service = f.String(validate=v.Length(max=64))


class ReplyArgs(Strict):
    body = f.String(required=True, validate=v.Length(min=1, max=10000))


class ActivitySchema(Strict):
    event = f.String(required=True)
    message = f.String(required=True)
    service = f.String(allow_none=True, required=True)
    created_at = UtcDateTime(required=True)


class ServiceFilterArgs(Strict):
    page = f.Integer(load_default=1, validate=v.Range(min=1, max=100000))
    per_page = f.Integer(load_default=25, validate=v.Range(min=1, max=100))


ServicePage = page_schema(ServiceSchema, "ServicePage")
LedgerPage = page_schema(LedgerEntrySchema, "LedgerPage")
OperationPage = page_schema(OperationSchema, "OperationPage")
TicketPage = page_schema(TicketSchema, "TicketPage")
ActivityPage = page_schema(ActivitySchema, "ActivityPage")
PackagePage = page_schema(PackageSchema, "PackagePage")
