"""The task type catalogue (spec §6): fields each type takes and the solution it answers."""

from __future__ import annotations

from dataclasses import dataclass, field

RECAPTCHA_SITEKEY_LEN = 40
PROXY_TYPES = frozenset({"http", "https", "socks4", "socks5"})
PROXY_FIELDS = ("proxyType", "proxyAddress", "proxyPort", "proxyLogin", "proxyPassword")
COMPLEX_IMAGE_CLASSES = frozenset({"recaptcha", "hcaptcha", "funcaptcha", "recognition"})
CUSTOM_TASK_CLASSES = frozenset({
    "DataDome", "Imperva", "TenDI", "Basilisk", "altcha", "castle", "tspd", "HUNT", "Temu",
    "alibaba",
})
CAPMONSTER_MODULES = frozenset({
    "universal", "captcha_math", "amazon", "botdetect", "facebook", "gmx", "google",
    "hotmail", "mailru", "okeng", "okrus", "ramblerrus", "solvemedia", "steam", "vk",
    "yandex", "yandexnew", "yandexwave", "ifr", "ocr", "sms", "ads", "bitcoin",
})


@dataclass(frozen=True)
class FieldSpec:
    """One task field: its JSON kind and the range of values it may take."""

    kind: str  # "str", "int", "num", "bool", "list", "obj"
    required: bool = False
    low: float | None = None
    high: float | None = None
    choices: frozenset[str] | None = None


@dataclass(frozen=True)
class TaskType:
    name: str
    fields: dict[str, FieldSpec]
    built_in: bool = False
    requires_proxy: bool = False
    recaptcha_family: bool = False
    solution_keys: tuple[str, ...] = ()
    # solution keys of which at least one must be present (e.g. token or cf_clearance)
    solution_any_of: tuple[str, ...] = field(default=())


S = FieldSpec
_URL_KEY = {"websiteURL": S("str", True), "websiteKey": S("str", True)}
_BROWSER = {"userAgent": S("str"), "cookies": S("str")}
_RECAPTCHA_V2 = {**_URL_KEY, **_BROWSER, "recaptchaDataSValue": S("str"),
                 "isInvisible": S("bool"), "apiDomain": S("str")}
_RECAPTCHA_V3 = {**_URL_KEY, "minScore": S("num", low=0.1, high=0.9), "pageAction": S("str"),
                 "isEnterprise": S("bool"), "apiDomain": S("str")}
_ENTERPRISE = {"enterprisePayload": S("obj")}
_HCAPTCHA = {**_URL_KEY, **_BROWSER, "isInvisible": S("bool"), "data": S("str"),
             "enterprisePayload": S("obj"), "fallbackToActualUA": S("bool")}
_TURNSTILE = {**_URL_KEY, **_BROWSER, "cloudflareTaskType": S("str"), "pageAction": S("str"),
              "data": S("str"), "pageData": S("str"), "htmlPageBase64": S("str"),
              "apiJsUrl": S("str")}
_GEETEST = {"websiteURL": S("str", True), "gt": S("str", True), "challenge": S("str"),
            "version": S("int", low=3, high=4), "initParameters": S("obj"),
            "geetestApiServerSubdomain": S("str"), "geetestGetLib": S("str"), **_BROWSER}
_FUNCAPTCHA = {"websiteURL": S("str", True), "websitePublicKey": S("str", True),
               "funcaptchaApiJSSubdomain": S("str"), "data": S("str"), **_BROWSER}
_TOKEN_LIKE = {**_URL_KEY, **_BROWSER}
_GRECAPTCHA = ("gRecaptchaResponse",)

_TYPES: list[TaskType] = [
    TaskType("ImageToTextTask", {
        "body": S("str"),  # presence is checked with the image rules (spec §5.5)
        "capMonsterModule": S("str"),
        "recognizingThreshold": S("int", low=0, high=100),
        "case": S("bool"),
        "numeric": S("int", low=0, high=2),
        "math": S("bool"),
    }, built_in=True, solution_keys=("text",)),
    TaskType("RecaptchaV2Task", _RECAPTCHA_V2, recaptcha_family=True, solution_keys=_GRECAPTCHA),
    TaskType("NoCaptchaTask", _RECAPTCHA_V2, requires_proxy=True, recaptcha_family=True,
             solution_keys=_GRECAPTCHA),
    TaskType("NoCaptchaTaskProxyless", _RECAPTCHA_V2, recaptcha_family=True,
             solution_keys=_GRECAPTCHA),
    TaskType("RecaptchaV2TaskProxyless", _RECAPTCHA_V2, recaptcha_family=True,
             solution_keys=_GRECAPTCHA),
    TaskType("RecaptchaV2EnterpriseTask", {**_RECAPTCHA_V2, **_ENTERPRISE},
             recaptcha_family=True, solution_keys=_GRECAPTCHA),
    TaskType("RecaptchaV2EnterpriseTaskProxyless", {**_RECAPTCHA_V2, **_ENTERPRISE},
             recaptcha_family=True, solution_keys=_GRECAPTCHA),
    TaskType("RecaptchaV3TaskProxyless", _RECAPTCHA_V3, recaptcha_family=True,
             solution_keys=_GRECAPTCHA),
    TaskType("RecaptchaV3EnterpriseTask", {**_RECAPTCHA_V3, **_ENTERPRISE},
             recaptcha_family=True, solution_keys=_GRECAPTCHA),
    TaskType("HCaptchaTask", _HCAPTCHA, requires_proxy=True, solution_keys=_GRECAPTCHA),
    TaskType("HCaptchaTaskProxyless", _HCAPTCHA, solution_keys=_GRECAPTCHA),
    TaskType("TurnstileTask", _TURNSTILE, solution_any_of=("token", "cf_clearance")),
    TaskType("TurnstileTaskProxyless", _TURNSTILE, solution_any_of=("token", "cf_clearance")),
    TaskType("GeeTestTask", _GEETEST, requires_proxy=True),
    TaskType("GeeTestTaskProxyless", _GEETEST),
    TaskType("FunCaptchaTask", _FUNCAPTCHA, requires_proxy=True, solution_keys=("token",)),
    TaskType("FunCaptchaTaskProxyless", _FUNCAPTCHA, solution_keys=("token",)),
    TaskType("MTCaptchaTask", _TOKEN_LIKE, solution_any_of=("token", "gRecaptchaResponse")),
    TaskType("ProsopoTask", _TOKEN_LIKE, solution_any_of=("token", "gRecaptchaResponse")),
    TaskType("BinanceTask", {**_TOKEN_LIKE, "validateId": S("str", True)},
             solution_any_of=("token", "gRecaptchaResponse")),
    TaskType("YidunTask", _TOKEN_LIKE, solution_any_of=("token", "gRecaptchaResponse")),
    TaskType("AmazonTask", {**_URL_KEY, "challengeScript": S("str", True),
                            "captchaScript": S("str", True), "context": S("str", True),
                            "iv": S("str", True), **_BROWSER},
             solution_any_of=("cookies", "token")),
    TaskType("ComplexImageTask", {
        "class": S("str", True, choices=COMPLEX_IMAGE_CLASSES),
        "imagesBase64": S("list"), "imageUrls": S("list"), "metadata": S("obj"),
        "websiteURL": S("str"), "userAgent": S("str"),
    }, solution_keys=("answer",)),
    TaskType("CustomTask", {
        "class": S("str", True, choices=CUSTOM_TASK_CLASSES),
        "websiteURL": S("str", True), "metadata": S("obj"), **_BROWSER,
        "domains": S("list"),
    }, solution_any_of=("data", "domains", "cookies", "token", "url", "headers", "fingerprint")),
]

TASK_TYPES: dict[str, TaskType] = {t.name: t for t in _TYPES}
BUILT_IN_TYPES = frozenset(t.name for t in _TYPES if t.built_in)
