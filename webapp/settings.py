"""TransferLab settings: one file, every value read from the environment.

Each variable is documented in docs/CONFIGURATION.md. Defaults let a fresh checkout run
(`make run`) with nothing else installed: SQLite and the Huey queue live in DATA_DIR.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from webapp import atomic
from webapp.tensorflow_logs import quiet_tensorflow

BASE_DIR = Path(__file__).resolve().parent.parent
# TensorFlow's C++ start-up notes (no CUDA driver, oneDNN, CPU instructions) are noise in every
# command's output; silenced before anything imports TensorFlow (manage.py and wsgi.py do it too,
# this covers any other way Django starts). TF_CPP_MIN_LOG_LEVEL=0 brings them back.
quiet_tensorflow()


def envbool(name: str, default: str) -> bool:
    """Read a boolean; anything but "True"/"False" is an error, not a silent False."""
    value = os.getenv(name, default)
    if value not in ("True", "False"):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value == "True"


def envint(name: str, default: int) -> int:
    value = os.getenv(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be a whole number, not {value!r}") from None


def envfraction(name: str, default: float) -> float:
    """Read a number above 0 and at most 1 (a probability); anything else is an error at start."""
    value = os.getenv(name, "")
    if value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if not 0 < number <= 1:
        raise ValueError(f"{name} must be a number above 0 and at most 1, such as 0.6, not {value!r}")
    return number


def envlist(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.getenv(name, default).split(",") if item.strip()]


def envsecret(name: str) -> str:
    """Read a secret from NAME, or from the file named by NAME_FILE (Docker/systemd secrets)."""
    path = os.getenv(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.getenv(name, "")


# --- Data folder: database, queue, uploads, weights, datasets -------------------------------
DATA_DIR = Path(os.getenv("DATA_DIR", str(BASE_DIR / "data"))).resolve()
# Readable by the service account alone: the database holds session keys, the folder the secret key.
DATA_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
WEIGHTS_DIR = DATA_DIR / "weights"
MEDIA_ROOT = DATA_DIR / "media"
DATASETS_DIR = DATA_DIR / "datasets"
# Uploaded media is never served from a public URL: views check permissions and stream files.
# No URL pattern serves this prefix; it exists because Django's tooling expects a MEDIA_URL.
MEDIA_URL = "/private-media-not-served/"


def _secret_key() -> str:
    """Use SECRET_KEY when set; otherwise generate one once and keep it in DATA_DIR."""
    key = envsecret("SECRET_KEY")
    if key:
        return key
    key_file = DATA_DIR / "secret_key"
    if not key_file.exists():
        # Whole or not at all, and only if absent: machines starting at once on a shared DATA_DIR all
        # end up reading the one key that was written first.
        atomic.create(key_file, secrets.token_urlsafe(50).encode(), mode=0o600)
    return key_file.read_text().strip()


SECRET_KEY = _secret_key()
DEBUG = envbool("DEBUG", "False")
ALLOWED_HOSTS = envlist("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = envlist("CSRF_TRUSTED_ORIGINS", "")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SECURE = envbool("SECURE_COOKIES", "False")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
BEHIND_PROXY = envbool("BEHIND_HTTPS_PROXY", "False")
if BEHIND_PROXY:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# HTTPS only: off by default (an intranet may serve plain HTTP). Behind TLS, docs/CONFIGURATION.md
# gives the values that leave `manage.py check --deploy` with nothing to report.
SECURE_SSL_REDIRECT = envbool("SECURE_SSL_REDIRECT", "False")
SECURE_HSTS_SECONDS = envint("SECURE_HSTS_SECONDS", 0)  # browsers refuse plain HTTP for this long
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("SECURE_HSTS_INCLUDE_SUBDOMAINS", "False")
SECURE_HSTS_PRELOAD = envbool("SECURE_HSTS_PRELOAD", "False")

# Content-Security-Policy (django-csp): scripts and everything else only from this server, never
# inline, never framed. Styles allow 'unsafe-inline' because bar widths and confusion-matrix
# colours are numbers computed per page into style="" attributes (and the Django admin uses a few);
# a style attribute cannot run code, and autoescaping keeps markup out of those values.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "script-src": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

INSTALLED_APPS = [
    "webapp",
    "classifier",
    "training",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "django_htmx",
    "huey.contrib.djhuey",
    "csp",
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Outside the session middleware, so a lock or a full disk while the session is saved is caught
    # too: a locked database answers 503 with Retry-After, a full disk 507, never a 500.
    "webapp.middleware.DatabaseBusyMiddleware",
    "webapp.diskspace.DiskFullMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.auth.middleware.LoginRequiredMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # An HTMX button whose session ended sends the whole page to log in (and back), not into its target.
    "webapp.htmx.HtmxLoginRedirectMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as django-axes asks: it turns a refused log-in into the lock page
]

ROOT_URLCONF = "webapp.urls"
WSGI_APPLICATION = "webapp.wsgi.application"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "classifier:classify"
LOGOUT_REDIRECT_URL = "login"

# --- Login throttling (django-axes) ----------------------------------------------------------
# LOGIN_FAILURE_LIMIT failed log-ins for one user name from one address lock that pair out for
# LOGIN_LOCKOUT_MINUTES, the admin's login included; failures older than that are forgotten, and
# a successful log-in forgets them at once. `manage.py axes_reset_username NAME` lifts a lock.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",  # first: refuses a locked-out pair before any password check
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = envint("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=envint("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False  # the lock ends when its page says it does
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
# Behind the reverse proxy every request comes from the proxy's address: count failures per client
# (the address the proxy appended to X-Forwarded-For), or one person could lock a user out for all.
AXES_CLIENT_IP_CALLABLE = "webapp.http.client_ip"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Web server (`manage.py serve`, as `make run` starts it: waitress) -----------------------
# One process with threads: TensorFlow and the warm models load once. Slow or idle connections
# never hold a thread; a silent one is closed after WEB_CHANNEL_TIMEOUT seconds.
WEB_THREADS = envint("WEB_THREADS", 4)
WEB_CHANNEL_TIMEOUT = envint("WEB_CHANNEL_TIMEOUT", 60)
WEB_CONNECTION_LIMIT = envint("WEB_CONNECTION_LIMIT", 1000)

# --- Database: SQLite in WAL mode by default, PostgreSQL with DATABASE_URL -------------------
if os.getenv("DATABASE_URL"):
    import dj_database_url

    # Kept open a minute, and checked before each request reuses it: a database server restarted (or a
    # connection a firewall dropped) costs one reconnect, not one failed request per web thread.
    DATABASES = {"default": dj_database_url.parse(envsecret("DATABASE_URL"), conn_max_age=60, conn_health_checks=True)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # As SQLite's busy timeout below: a statement that waits 20 s for a lock gives up, and a request
        # answers 503 "try again" (webapp.middleware) instead of holding its thread. `?options=` wins.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("options", "-c lock_timeout=20s")
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": DATA_DIR / "db.sqlite3",
            # Kept open between requests (each web thread has its own): opening and closing a
            # connection per request cost about a third of a LiteRT prediction's request time.
            "CONN_MAX_AGE": envint("DB_CONN_MAX_AGE", 600),
            "CONN_HEALTH_CHECKS": True,
            "OPTIONS": {
                # The web server and the worker write concurrently: WAL lets readers run during a
                # write, IMMEDIATE takes the write lock up front so busy_timeout applies instead of
                # failing with "database is locked" half way through a transaction.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Task queue: SqliteHuey in its own file by default, Redis with REDIS_URL -----------------
# How a worker looks for queued jobs in SQLite (Redis hands them over at once): every 0.1 s after a
# job, less often while idle, but at least every half second however long it has been idle, so a
# queued import starts within a second (huey's default backs off to 10 s). An empty poll is one
# short SQLite transaction: about 0.1 % of one core.
QUEUE_POLLING = {"initial_delay": 0.1, "backoff": 1.15, "max_delay": 0.5}
_huey_common = {
    "name": "transferlab",
    # Written explicitly: djhuey otherwise runs tasks inside the web request when DEBUG is on.
    "immediate": False,
    "consumer": {
        # Two: a model being converted to LiteRT (seconds, minutes for the largest) never holds up
        # a zip import or a weights download queued behind it.
        "workers": envint("WORKER_CONCURRENCY", 2),
        "worker_type": "thread",
        "periodic": True,
        **QUEUE_POLLING,
    },
}
if os.getenv("REDIS_URL"):
    HUEY = {**_huey_common, "huey_class": "huey.RedisHuey", "url": envsecret("REDIS_URL")}
    TRAINING_QUEUE = {"huey_class": "huey.RedisHuey", "name": "transferlab-training", "url": envsecret("REDIS_URL")}
else:
    # Its own file: SqliteHuey takes an exclusive lock on every dequeue (huey#445).
    HUEY = {**_huey_common, "huey_class": "huey.SqliteHuey", "filename": str(DATA_DIR / "huey.sqlite3")}
    TRAINING_QUEUE = {
        "huey_class": "huey.SqliteHuey",
        "name": "transferlab-training",
        "filename": str(DATA_DIR / "huey-training.sqlite3"),
    }
# Training has its own queue and consumer (`manage.py run_training_worker`, started by `make run`):
# an hour of training never holds up a zip import or a weights download. Jobs run one after
# another unless TRAINING_CONCURRENCY allows more at once (each uses every core it is given).
TRAINING_CONCURRENCY = envint("TRAINING_CONCURRENCY", 1)


def _default_training_memory_mb() -> int:
    """Half of this machine's memory, at most 8 GB: the web process and its models need the rest."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return 4096
    return int(max(1024, min(8192, total // 2)))


# What one training job may use; the trainer lowers the batch size (and drops optional caches) to fit.
TRAINING_MEMORY_MB = envint("TRAINING_MEMORY_MB", _default_training_memory_mb())

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.getenv("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static files through whitenoise -------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = Path(os.getenv("STATIC_ROOT", str(BASE_DIR / "staticfiles")))  # filled by collectstatic
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    # FileSystemStorage that writes through a temporary name: other machines never see half a file.
    "default": {"BACKEND": "webapp.storage.AtomicFileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Uploads -------------------------------------------------------------------------------
# Django has no file-size cap of its own: views check MAX_UPLOAD_BYTES and MAX_FILES_PER_REQUEST
# and answer with a message. Django's own count limit is only a backstop against abuse.
MAX_UPLOAD_BYTES = envint("MAX_UPLOAD_MB", 20) * 1024 * 1024
MAX_IMAGE_PIXELS = envint("MAX_IMAGE_PIXELS", 50_000_000)
# Pixels that all images of one classify request (Classify page or API) may hold together. Files beyond
# it get their own error and can be sent again in another request; the others are still classified.
# Bounds how long one request decodes; memory is bounded by one image at a time (MAX_IMAGE_PIXELS).
MAX_REQUEST_PIXELS = envint("MAX_REQUEST_PIXELS", 400_000_000)
MAX_FILES_PER_REQUEST = envint("MAX_FILES_PER_REQUEST", 32)
MAX_WEIGHTS_UPLOAD_BYTES = envint("MAX_WEIGHTS_UPLOAD_MB", 1024) * 1024 * 1024
DATA_UPLOAD_MAX_NUMBER_FILES = max(1000, MAX_FILES_PER_REQUEST * 4)
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440  # above this, uploads are spooled to a temp file
# Django chmods stored uploads to 0644 whatever the umask: keep them to the service account.
FILE_UPLOAD_PERMISSIONS = 0o600
FILE_UPLOAD_DIRECTORY_PERMISSIONS = 0o700

# --- Disk and retention ---------------------------------------------------------------------
# Space kept free on the data disk: a write that would leave less is refused with a message (507).
MIN_FREE_DISK_MB = envint("MIN_FREE_DISK_MB", 500)
# Predictions older than this many days are deleted with their images by a daily task; 0 keeps them.
PREDICTION_RETENTION_DAYS = envint("PREDICTION_RETENTION_DAYS", 0)
# Dataset images a person deleted wait this many days in the dataset's trash, so the deletion can be undone.
TRASH_RETENTION_DAYS = envint("TRASH_RETENTION_DAYS", 30)
# False: predictions are recorded for History with their thumbnail, but uploaded originals are not kept.
KEEP_CLASSIFIED_IMAGES = envbool("KEEP_CLASSIFIED_IMAGES", "True")
# A trained model's predictions whose best guess is less sure than this are listed for review on its
# dataset (training/review.py); the review page can show another threshold for one look.
REVIEW_CONFIDENCE = envfraction("REVIEW_CONFIDENCE", 0.6)

# --- Dataset zip import (training/archives.py) ---------------------------------------------
# Checked from the zip's directory before a single member is extracted, then again while the
# bytes stream (a zip can lie about sizes). Each image inside also obeys MAX_UPLOAD_MB and
# MAX_IMAGE_PIXELS. Refusals name the limit and the variable to raise it.
IMPORT_MAX_ZIP_BYTES = envint("IMPORT_MAX_ZIP_MB", 2048) * 1024 * 1024  # size of the uploaded zip
IMPORT_MAX_TOTAL_BYTES = envint("IMPORT_MAX_TOTAL_MB", 8192) * 1024 * 1024  # sum of uncompressed sizes
IMPORT_MAX_MEMBERS = envint("IMPORT_MAX_MEMBERS", 100_000)  # files and folders in one zip
IMPORT_MAX_RATIO = envint("IMPORT_MAX_RATIO", 100)  # uncompressed / compressed size of one member
# Labels one dataset may have (zips, manifests, the label form, uploads and the admin all obey it):
# bounds the rows and the transactions of one import.
MAX_LABELS_PER_DATASET = envint("MAX_LABELS_PER_DATASET", 1000)

# --- Inference engine ----------------------------------------------------------------------
# Each process that imports TensorFlow holds its models; keep few of them warm per process.
MODEL_CACHE_SIZE = envint("MODEL_CACHE_SIZE", 3)
DEFAULT_MODEL = os.getenv("DEFAULT_MODEL", "mobilenetv2")
# Threads TensorFlow uses inside one operation. On a small server the web process and the worker
# share the cores: the default (0) lets TensorFlow use all of them; set lower to leave room.
TF_INTRA_OP_THREADS = envint("TF_INTRA_OP_THREADS", 0)
TF_INTER_OP_THREADS = envint("TF_INTER_OP_THREADS", 1)
# Runtime of inference: "litert" serves every model whose LiteRT (XNNPACK) conversion agrees with
# Keras through LiteRT, several times faster on CPU, and the rest through TensorFlow; "tensorflow"
# turns LiteRT off entirely (for diagnosis). Conversions run in the worker, never in a request.
INFERENCE_RUNTIME = os.getenv("INFERENCE_RUNTIME", "litert")
if INFERENCE_RUNTIME not in ("litert", "tensorflow"):
    raise ValueError(f"INFERENCE_RUNTIME must be litert or tensorflow, not {INFERENCE_RUNTIME!r}")
# Cores one LiteRT model may use in a web process (0: every core this process may run on).
# A lone request uses all of them; overlapping requests get one each, never more in all.
INFERENCE_CORES = envint("INFERENCE_CORES", 0)
# Downloads of pretrained weights happen only when an admin asks for one.
WEIGHTS_DOWNLOAD_TIMEOUT = envint("WEIGHTS_DOWNLOAD_TIMEOUT", 30)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    # A 4xx is the client's mistake: one line each, a traceback only for real errors (5xx).
    "filters": {"client_errors_without_traceback": {"()": "webapp.logging.ClientErrorsWithoutTraceback"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "filters": ["client_errors_without_traceback"],
        }
    },
    "root": {"handlers": ["console"], "level": os.getenv("LOG_LEVEL", "INFO")},
    "loggers": {
        "django": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # run_huey installs its own handler on "huey"; propagating would print every line twice.
        "huey": {"level": "INFO", "propagate": False},
        # django-axes logs every log-in and log-out at INFO; failures and lock-outs are WARNINGs.
        "axes": {"level": "WARNING"},
    },
}
CSRF_FAILURE_VIEW = "webapp.views.csrf_failure"
