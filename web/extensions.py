"""Flask extensions, created unbound and attached in ``create_app()`` with ``init_app``."""

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_wtf.csrf import CSRFProtect

login_manager = LoginManager()
csrf = CSRFProtect()
migrate = Migrate(render_as_batch=True)
limiter = Limiter(key_func=get_remote_address, default_limits=[])
