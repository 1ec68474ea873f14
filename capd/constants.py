"""Numbers of the contract, with their units, in one place.

Each is a default; operators override them through ``capd.config.Settings``.
"""

from decimal import Decimal

# Money in storage: an integer count of units, 1e-8 USD each (exact for prices per 1,000
# with up to 5 decimals). The largest balance or amount capd holds is 1e9 USD: far inside a
# signed 64-bit integer, so sums over a ledger can never overflow in any backend.
UNITS_PER_USD = 10**8
MAX_UNITS = 10**17

MAX_BODY_BYTES = 1024 * 1024  # spec §1: bodies over 1 MiB are refused before parsing
# an over-limit body up to this size is read and discarded before the refusal is sent, so
# that the client, still sending, reads the error instead of a reset connection; beyond
# it the refusal is sent at once and the connection closed
MAX_DRAIN_BYTES = 4 * 1024 * 1024
MIN_IMAGE_BYTES = 100  # spec §5.5: fewer decoded bytes is ERROR_ZERO_CAPTCHA_FILESIZE
MAX_IMAGE_BYTES = 51_200  # spec §5.5: more decoded bytes is ERROR_TOO_BIG_CAPTCHA_FILESIZE
# an image must decode (issue 12: else ERROR_ZERO_CAPTCHA_FILESIZE at createTask), as one
# of these formats (Pillow's names; no format that runs an outside program, such as EPS)
# and within this many pixels: a 50 KB file can declare huge dimensions (a decompression
# bomb), refused from its header before any pixel is decoded
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "ICO", "PPM")
MAX_IMAGE_PIXELS = 4_000_000

RESULT_TTL_S = 300  # spec §4: results kept 5 minutes after completion
MAX_POLLS_PER_TASK = 120  # spec §4
MAX_POLLS_PER_S = 10  # spec §4: default per-task poll rate
REPORT_WINDOW_S = 24 * 3600  # spec §3: reports accepted within 24 h of the solution

IMAGE_DEADLINE_S = 60  # built-in OCR: a task not solved by then fails
WORKER_DEADLINE_S = 180  # spec §6: worker-served types
OCR_LEASE_S = 15  # an in-process OCR lease; a crashed node's work returns after this

BAN_DURATION_S = 600  # spec §4: 10 minutes
UNKNOWN_KEY_BAN_THRESHOLD = 30  # unknown-key requests per window from one IP
VIOLATION_BLOCK_THRESHOLD = 20  # violations per window by one account from one IP
VIOLATION_WINDOW_S = 60

QUEUE_DEPTH_LIMIT = 1000  # queued tasks per type before ERROR_NO_SLOT_AVAILABLE

# Price per 1,000 solved tasks, USD (CapMonster Cloud's list prices as a starting point).
DEFAULT_PRICE_PER_1000 = Decimal("0.3")
IMAGE_PRICE_PER_1000 = Decimal("0.3")
TOKEN_PRICE_PER_1000 = Decimal("0.6")

DEMO_BALANCE = Decimal("10")

# a userAgent older than this Chrome/Edge/Firefox major version: ERROR_WRONG_USERAGENT
MIN_BROWSER_MAJOR = 130
MIN_SAFARI_MAJOR = 16
ACTUAL_USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36"
)

# worker protocol (spec §7)
WORKER_SEEN_WINDOW_S = 60  # a lease call marks its types as served this long
WORKER_LEASE_S = 60  # a worker's lease, unless extended
MAX_LEASE_EXTEND_S = 300
MAX_LEASE_WAIT_S = 30
MAX_LEASE_BATCH = 50

# outbound
PROXY_CHECK_TIMEOUT_S = 3.0
PROXY_CHECK_CACHE_S = 60.0
PROXY_BAN_S = 600  # a proxy a worker reports banned is refused this long
# proxy pre-flights per account and window: past it, ERROR_TOO_MUCH_REQUESTS (the
# pre-flight connects where the client says: unlimited, it would be a port scanner)
PROXY_CHECKS_PER_WINDOW = 20
PROXY_CHECK_WINDOW_S = 60

# slow clients: a request's headers, and each read of its body, must arrive within these
HEADER_READ_TIMEOUT_S = 10.0
BODY_READ_TIMEOUT_S = 10.0
# an idle keep-alive connection is closed after this; longer than the idle expiry of
# common client pools (httpx 5 s, aiohttp 15 s), so the client closes first: when both
# sides expire together, a request sent at that instant meets a closed connection
KEEP_ALIVE_S = 20.0
CALLBACK_TIMEOUT_S = 2.0  # spec §8
CALLBACK_RETRIES = 3

# statistics methods and the web console (issue 16)
QUEUE_STATS_CACHE_S = 10.0  # anti-captcha's getQueueStats: answers are cached 10 s
QUEUE_STATS_SPEED_WINDOW_S = 3600  # getQueueStats' speed: median over the last hour's solves
SPENDING_STATS_HOURS = 24  # getSpendingStats: one record per hour for 24 hours
CONSOLE_SESSION_S = 8 * 3600  # a console sign-in lasts this long (then sign in again)
CONSOLE_USAGE_DAYS = 30  # the console's charts: tasks and spending per day
CONSOLE_ALL_USAGE_CACHE_S = 60.0  # the operator's all-accounts charts are this fresh
# an API key is stored as its SHA-256 digest plus this many of its first characters, so
# that an operator can tell an account's keys apart (16 of a key's 128 random bits)
KEY_HINT_CHARS = 4
KEY_ID_CHARS = 16  # a key's id, for operators and forms: the start of its digest

# task objects (createTask): bounds on everything but the images, checked before anything
# is stored; fields outside the type's catalogue entry are refused past the count and
# otherwise dropped (never stored, never handed to a worker)
MAX_TASK_DEPTH = 10  # nesting levels below the task object
MAX_UNKNOWN_FIELDS = 32  # fields the task type does not take
MAX_TASK_FIELDS_BYTES = 128 * 1024  # serialised size of the fields other than the images

CALLBACK_BACKOFF_S = 1.0  # the first retry's delay; each later one doubles it
CALLBACK_CONCURRENCY = 8  # deliveries in flight on one node, all accounts together
# deliveries in flight per account, all nodes together: a slow receiver holds at most
# this many senders, never the others' (issue 12)
CALLBACK_PER_ACCOUNT = 2
# a claimed delivery is another node's to retry after this; far above one attempt's
# CALLBACK_TIMEOUT_S, so a live sender never loses its claim
CALLBACK_LEASE_S = 30.0
CALLBACK_POLL_S = 1.0  # how often a node looks for due deliveries it was not told of

# retention (issue 12): a finished task's payload (image, proxy and its login, cookies,
# userAgent, callback URL) goes after PAYLOAD_RETENTION_S, by default when reports on it
# end (spec §3); the task row itself after TASK_RETENTION_S. Ledger rows stay forever.
PAYLOAD_RETENTION_S = REPORT_WINDOW_S
TASK_RETENTION_S = 30 * 24 * 3600
PRUNE_BATCH = 500  # rows per statement: each batch is a short transaction
PRUNE_EVERY_S = 60.0  # how often `capd serve` prunes (one batch of each kind per round)

# custom recognition modules (issue 15, capd/modules): trained per captcha scheme,
# stored as files in the modules directory, read by tasks naming them
MODULES_POLL_S = 30.0  # how often a node looks for new / changed / removed modules
MODULE_TRAIN_MINUTES = 15.0  # `capd module train` default wall-clock budget
MODULE_MIN_SAMPLES = 20  # labelled images needed to train (some are held out)
MODULE_HELD_OUT_SHARE = 0.2  # share of the labelled images never trained on
MODULE_MAX_FILE_BYTES = 256 * 1024 * 1024  # a module file (or a member of it) above this is refused
MODULES_DIR_NAME = "capd-modules"  # default directory, beside the SQLite file
MODULE_PROGRESS_EVERY_S = 10.0  # training prints a progress line at least this often
MODULE_MAX_SAMPLES = 20_000  # answers kept per module (beyond it, new ones are not)
