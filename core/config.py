"""Configuration from ``HOSTBAY_*`` environment variables. Every setting and its default is listed here and in
docs/operations.md; a test keeps the two in step."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

# name -> (default, description). Defaults that depend on the instance folder are filled in by load().
SETTINGS: dict[str, tuple[str | None, str]] = {
    "HOSTBAY_DATABASE_URL": (None, "SQLAlchemy URL. Default: SQLite file instance/hostbay.sqlite3 (embedded mode)."),
    "HOSTBAY_REDIS_URL": (None, "Redis URL for RQ jobs and rate limits. Unset: jobs run in-process (embedded mode)."),
    "HOSTBAY_SECRET_KEY": (None, "Session signing key. Unset: generated once into instance/secret_key."),
    "HOSTBAY_SECRET_KEYS": (None, "Fernet keys for secrets at rest (secret driver settings, TOTP seeds, webhook signing secrets, BMC passwords), comma-separated, newest first. Unset: generated once into instance/secret_keys."),
    "HOSTBAY_POWER_SETTINGS": (None, "JSON object of power-driver settings by driver name, e.g. {\"ipmi\": {\"min_interval_ms\": 1000, \"cipher_suite\": \"17\"}} (docs/dedicated.md)."),
    "HOSTBAY_PLUGINS": (None, "Comma-separated plugin names to enable. Unset: every installed plugin."),
    "HOSTBAY_INSTANCE_PATH": (None, "Folder for the SQLite file, the secret key and uploads. Default: ./instance."),
    "HOSTBAY_JOBS": (None, "Job mode: 'rq' (needs HOSTBAY_REDIS_URL), 'thread' or 'sync'. Default: rq if Redis is set, else thread."),
    "HOSTBAY_QUEUE": ("hostbay", "Prefix of the RQ queues: jobs go to <prefix>-money, <prefix>-driver and <prefix>-notify by class (docs/operations.md)."),
    "HOSTBAY_WORKER_QUEUES": (None, "Queue classes a `hostbay worker` serves when started without --queue, comma-separated (money, driver, notify). Default: all, in that priority order."),
    "HOSTBAY_STALE_SECONDS": (None, "Seconds without a heartbeat after which a running job counts as a dead worker's and another worker takes it over. Default: 600."),
    "HOSTBAY_SCHEDULER_TICK": (None, "Seconds between two passes of each worker's scheduler (periodic jobs, stale-claim recovery). Default: 10."),
    "HOSTBAY_BASE_URL": ("http://127.0.0.1:5000", "Public URL of the panel, used in e-mails and payment return links."),
    "HOSTBAY_SMTP_URL": (None, "smtp://host:port for notices. Unset: notices are recorded but not mailed."),
    "HOSTBAY_MAIL_FROM": ("hostbay@localhost", "Sender address of notices."),
    "HOSTBAY_RETENTION_DAYS": ("3", "Days a suspended service is kept before it is queued for removal."),
    "HOSTBAY_IP_COOLDOWN_HOURS": ("24", "Hours a released address rests before it is handed out again."),
    "HOSTBAY_LOGIN_RATE_LIMIT": ("10 per minute", "Rate limit of failed login attempts per client address (successful logins do not count)."),
    "HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT": ("30 per hour", "Rate limit of failed login attempts per account, from any address."),
    "HOSTBAY_TRUSTED_PROXIES": ("0", "Number of reverse proxies in front of the panel whose X-Forwarded-For/-Proto/-Host headers are trusted (0: none)."),
    "HOSTBAY_SESSION_HOURS": ("336", "Lifetime of a login session in hours (default two weeks); signing out ends every session of the account."),
    "HOSTBAY_STAFF_2FA": (None, "Two-factor sign-in for staff: 'required' or 'optional'. Default: required, except in embedded mode (optional)."),
    "HOSTBAY_DEMO": (None, "Set to 1 by `scripts/demo`: loads the opt-in `fake` plugin (simulated drivers) with the others."),
    "HOSTBAY_LOG_LEVEL": ("INFO", "Log level (DEBUG, INFO, WARNING, ERROR)."),
    "HOSTBAY_METRICS_DIR": (None, "Folder where every process writes its Prometheus samples so /metrics adds them up (gunicorn workers and `hostbay worker`s); empty it when they start. Unset: each process reports only itself."),
    "HOSTBAY_METRICS_ALLOW": (None, "Networks (CIDRs, comma-separated) besides loopback that may read /metrics."),
    "HOSTBAY_METRICS_TOKEN": (None, "Bearer token that lets any client read /metrics."),
    "HOSTBAY_LOG_FORMAT": ("text", "Log format: 'text' (one readable line per record) or 'json' (JSON lines with request id, operation id, service and user UUID)."),
    "HOSTBAY_DEMO_DRIVER": ("fake", "Virtualization driver of the `hostbay demo` packages and node (if loaded)."),
    "HOSTBAY_TOPUP_MIN_CENTS": (None, "Smallest wallet top-up in US cents (default 500, see docs/payments.md)."),
    "HOSTBAY_TOPUP_MAX_CENTS": (None, "Largest wallet top-up in US cents (default 1000000, see docs/payments.md)."),
    "HOSTBAY_ISO_DIR": (None, "Folder for uploaded ISO images (never a static folder). Default: instance/isos."),
    "HOSTBAY_ISO_MAX_BYTES": (str(8 * 1024 ** 3), "Largest ISO image a customer may upload, in bytes."),
    "HOSTBAY_ISO_QUOTA_COUNT": ("3", "ISO images (pending or approved) an account may keep, unless a package of its live services sets one (the largest applies); a per-account override wins."),
    "HOSTBAY_ISO_QUOTA_BYTES": (str(10 * 1024 ** 3), "Total bytes of ISO images an account may keep, unless a package of its live services sets one (the largest applies); a per-account override wins."),
    "HOSTBAY_CONSOLE_TOKEN_SECONDS": ("60", "Lifetime of a console token in seconds (at most 60)."),
    "HOSTBAY_CONSOLE_PROXY_HOST": ("127.0.0.1", "Address `hostbay console-proxy` listens on (keep it on loopback behind the TLS proxy)."),
    "HOSTBAY_CONSOLE_PROXY_PORT": ("6080", "Port `hostbay console-proxy` listens on."),
    "HOSTBAY_API_RATE_LIMIT": ("600 per minute", "Requests one API token may make (flask-limiter syntax, e.g. '600 per minute')."),
    "HOSTBAY_WEBHOOK_ALLOW_PRIVATE": (None, "Set to 1 to allow outgoing webhook URLs on private or loopback addresses (tests, internal receivers)."),
    "HOSTBAY_READY_URL": (None, "Base URL at which new servers reach hostbay to report that they finished their first boot (phone home). Default: HOSTBAY_BASE_URL."),
    "HOSTBAY_READY_TIMEOUT": ("900", "Seconds a set-up, reinstall or rebuild waits for the server's own report before it fails for staff."),
    "HOSTBAY_READY_TOKEN_SECONDS": ("86400", "Lifetime in seconds of the single-use URL a server reports readiness to."),
    "HOSTBAY_CONSOLE_URL": (None, "WebSocket URL of the console proxy as the browser sees it (wss://panel.example.com/console-ws). Default: ws://127.0.0.1:<proxy port>/."),
    "HOSTBAY_BRAND_NAME": (None, "Company name shown in the panel, status page, page titles and e-mails until staff change it (Staff › Branding). Default: hostbay."),
    "HOSTBAY_BRAND_LOGO": (None, "URL of the logo (https://… or a path on the panel) used until staff change it. Default: none (the name is shown)."),
    "HOSTBAY_BRAND_COLOR": (None, "Primary colour as #rrggbb, used until staff change it; it must reach 4.5:1 contrast with white. Default: #0b5cad."),
}


def _instance_path(env) -> Path:
    return Path(env.get("HOSTBAY_INSTANCE_PATH") or Path.cwd() / "instance").resolve()


def _secret_key(instance: Path) -> str:
    path = instance / "secret_key"
    if path.exists():
        return path.read_text().strip()
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key


def load(env=None) -> dict:
    """Flask config mapping built from the environment."""
    env = os.environ if env is None else env
    instance = _instance_path(env)
    get = lambda name: env.get(name) or SETTINGS[name][0]  # noqa: E731
    db_url = get("HOSTBAY_DATABASE_URL") or f"sqlite:///{instance / 'hostbay.sqlite3'}"
    redis_url = get("HOSTBAY_REDIS_URL")
    jobs = get("HOSTBAY_JOBS") or ("rq" if redis_url else "thread")
    plugins = get("HOSTBAY_PLUGINS")
    return {
        "INSTANCE_PATH": str(instance),
        "SQLALCHEMY_DATABASE_URI": db_url,
        "HOSTBAY_REDIS_URL": redis_url,
        "SECRET_KEY": get("HOSTBAY_SECRET_KEY") or _secret_key(instance),
        # whether the key came from the setting (every web process shares it) or was generated into the instance
        "HOSTBAY_SECRET_KEY_SET": bool(get("HOSTBAY_SECRET_KEY")),
        "HOSTBAY_SECRET_KEYS": get("HOSTBAY_SECRET_KEYS"),
        "HOSTBAY_POWER_SETTINGS": get("HOSTBAY_POWER_SETTINGS"),
        "HOSTBAY_PLUGINS": [p.strip() for p in plugins.split(",") if p.strip()] if plugins else None,
        "HOSTBAY_JOBS": jobs,
        "HOSTBAY_QUEUE": get("HOSTBAY_QUEUE"),
        "HOSTBAY_WORKER_QUEUES": get("HOSTBAY_WORKER_QUEUES"),
        "HOSTBAY_STALE_SECONDS": float(get("HOSTBAY_STALE_SECONDS")) if get("HOSTBAY_STALE_SECONDS") else None,
        "HOSTBAY_SCHEDULER_TICK": float(get("HOSTBAY_SCHEDULER_TICK")) if get("HOSTBAY_SCHEDULER_TICK") else None,
        "HOSTBAY_BASE_URL": get("HOSTBAY_BASE_URL").rstrip("/"),
        "HOSTBAY_SMTP_URL": get("HOSTBAY_SMTP_URL"),
        "HOSTBAY_MAIL_FROM": get("HOSTBAY_MAIL_FROM"),
        "HOSTBAY_RETENTION_DAYS": int(get("HOSTBAY_RETENTION_DAYS")),
        "HOSTBAY_IP_COOLDOWN_HOURS": int(get("HOSTBAY_IP_COOLDOWN_HOURS")),
        "HOSTBAY_LOGIN_RATE_LIMIT": get("HOSTBAY_LOGIN_RATE_LIMIT"),
        "HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT": get("HOSTBAY_LOGIN_ACCOUNT_RATE_LIMIT"),
        "HOSTBAY_TRUSTED_PROXIES": int(get("HOSTBAY_TRUSTED_PROXIES")),
        "HOSTBAY_SESSION_HOURS": int(get("HOSTBAY_SESSION_HOURS")),
        "HOSTBAY_STAFF_2FA": get("HOSTBAY_STAFF_2FA"),
        "HOSTBAY_LOG_LEVEL": get("HOSTBAY_LOG_LEVEL"),
        "HOSTBAY_DEMO": (get("HOSTBAY_DEMO") or "").lower() in ("1", "true", "yes", "on"),
        "HOSTBAY_LOG_FORMAT": get("HOSTBAY_LOG_FORMAT"),
        "HOSTBAY_METRICS_DIR": get("HOSTBAY_METRICS_DIR"),
        "HOSTBAY_METRICS_ALLOW": get("HOSTBAY_METRICS_ALLOW"),
        "HOSTBAY_METRICS_TOKEN": get("HOSTBAY_METRICS_TOKEN"),
        "HOSTBAY_DEMO_DRIVER": get("HOSTBAY_DEMO_DRIVER"),
        "HOSTBAY_TOPUP_MIN_CENTS": get("HOSTBAY_TOPUP_MIN_CENTS"),
        "HOSTBAY_TOPUP_MAX_CENTS": get("HOSTBAY_TOPUP_MAX_CENTS"),
        "HOSTBAY_ISO_DIR": get("HOSTBAY_ISO_DIR"),  # None: INSTANCE_PATH/isos (see iso.iso_dir)
        "HOSTBAY_ISO_MAX_BYTES": int(get("HOSTBAY_ISO_MAX_BYTES")),
        "HOSTBAY_ISO_QUOTA_COUNT": int(get("HOSTBAY_ISO_QUOTA_COUNT")),
        "HOSTBAY_ISO_QUOTA_BYTES": int(get("HOSTBAY_ISO_QUOTA_BYTES")),
        "HOSTBAY_CONSOLE_TOKEN_SECONDS": min(60, int(get("HOSTBAY_CONSOLE_TOKEN_SECONDS"))),
        "HOSTBAY_CONSOLE_PROXY_HOST": get("HOSTBAY_CONSOLE_PROXY_HOST"),
        "HOSTBAY_CONSOLE_PROXY_PORT": int(get("HOSTBAY_CONSOLE_PROXY_PORT")),
        "HOSTBAY_CONSOLE_URL": get("HOSTBAY_CONSOLE_URL")
        or f"ws://127.0.0.1:{int(get('HOSTBAY_CONSOLE_PROXY_PORT'))}/",
        "HOSTBAY_API_RATE_LIMIT": get("HOSTBAY_API_RATE_LIMIT"),
        "HOSTBAY_BRAND_NAME": get("HOSTBAY_BRAND_NAME"),
        "HOSTBAY_BRAND_LOGO": get("HOSTBAY_BRAND_LOGO"),
        "HOSTBAY_BRAND_COLOR": get("HOSTBAY_BRAND_COLOR"),
        "HOSTBAY_WEBHOOK_ALLOW_PRIVATE": (get("HOSTBAY_WEBHOOK_ALLOW_PRIVATE") or "").lower() in ("1", "true", "yes"),
        "HOSTBAY_READY_URL": (get("HOSTBAY_READY_URL") or get("HOSTBAY_BASE_URL")).rstrip("/"),
        "HOSTBAY_READY_TIMEOUT": int(get("HOSTBAY_READY_TIMEOUT")),
        "HOSTBAY_READY_TOKEN_SECONDS": int(get("HOSTBAY_READY_TOKEN_SECONDS")),
        "HOSTBAY_EMBEDDED": db_url.startswith("sqlite") or not redis_url,
    }


# --------------------------------------------------------------------------------------------------------------
# Process environment needed before any app exists
# --------------------------------------------------------------------------------------------------------------

def prepare_metrics_dir(env=None) -> str | None:
    """Point prometheus_client's multiprocess mode at ``HOSTBAY_METRICS_DIR`` (unless ``PROMETHEUS_MULTIPROC_DIR``
    is set already) and create the folder. Called by :mod:`hostbay.core.metrics` when it is imported:
    prometheus_client picks its storage when it is first imported, before any app and its config exist."""
    env = os.environ if env is None else env
    folder = env.get("HOSTBAY_METRICS_DIR")
    if folder and not env.get("PROMETHEUS_MULTIPROC_DIR"):
        os.makedirs(folder, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = folder
    return multiprocess_dir(env)


def multiprocess_dir(env=None) -> str | None:
    """The folder prometheus_client's multiprocess mode writes to in this process, or None."""
    env = os.environ if env is None else env
    return env.get("PROMETHEUS_MULTIPROC_DIR") or None
