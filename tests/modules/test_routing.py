"""Routing: a task whose module names a stored module is read by it; unknown names keep
the general engine; new, changed and removed modules are noticed at the next poll."""

from __future__ import annotations

from pathlib import Path

import pytest

from capd.domain.keys import parse_client_key
from capd.domain.tasks import ImageSpec, _image_spec
from capd.modules.engine import ModuleRouter
from capd.modules.library import Library
from capd.solving.ocr.base import Reading
from tests.helpers import captcha_png


class General:
    name = "general"

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        return Reading("general", 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def router(lib: Path, clock: Clock) -> ModuleRouter:
    return ModuleRouter(General(), Library(lib), poll_s=30.0, monotonic=clock)


def test_task_naming_a_stored_module_is_read_by_it(module_file: bytes, tmp_path: Path) -> None:
    Library(tmp_path).save(module_file)
    r = router(tmp_path, Clock())
    reading = r.read(captcha_png("4821"), ImageSpec(module="tiny"))
    assert reading.text != "general"
    assert set(reading.text) <= set("0123456789")  # the tiny module knows digits only


def test_unknown_module_names_read_with_the_general_engine(module_file: bytes,
                                                           tmp_path: Path) -> None:
    Library(tmp_path).save(module_file)
    r = router(tmp_path, Clock())
    for name in ("universal", "yandex", "captcha_math", "other"):
        assert r.read(captcha_png("4821"), ImageSpec(module=name)).text == "general"


def test_key_option_and_capmonster_module_both_select_the_module() -> None:
    key = "a" * 32
    assert _image_spec({}, parse_client_key(f"{key}__TINY"), {}).module == "tiny"
    assert _image_spec({"capMonsterModule": "tiny"}, parse_client_key(key), {}).module == "tiny"


def test_a_module_stored_later_is_used_after_the_poll_interval(module_file: bytes,
                                                              tmp_path: Path) -> None:
    clock = Clock()
    r = router(tmp_path, clock)
    Library(tmp_path).save(module_file)
    assert r.read(captcha_png("4821"), ImageSpec(module="tiny")).text == "general"
    clock.now += 30.0
    assert r.read(captcha_png("4821"), ImageSpec(module="tiny")).text != "general"
    assert r.modules() == {"tiny": 1}


def test_a_new_version_replaces_the_old_and_removal_restores_the_general_engine(
        module_file: bytes, tmp_path: Path) -> None:
    clock = Clock()
    lib = Library(tmp_path)
    lib.save(module_file)
    r = router(tmp_path, clock)
    assert r.modules() == {"tiny": 1}
    lib.save(module_file)
    clock.now += 30.0
    r.read(captcha_png("4821"), ImageSpec(module="tiny"))
    assert r.modules() == {"tiny": 2}
    lib.remove("tiny")
    clock.now += 30.0
    assert r.read(captcha_png("4821"), ImageSpec(module="tiny")).text == "general"
    assert r.modules() == {}


def test_a_damaged_version_is_skipped_and_the_previous_keeps_serving(module_file: bytes,
                                                                     tmp_path: Path) -> None:
    clock = Clock()
    lib = Library(tmp_path)
    lib.save(module_file)
    r = router(tmp_path, clock)
    (tmp_path / "tiny" / "2.capdmodule").write_bytes(module_file[:1000])
    clock.now += 30.0
    assert r.read(captcha_png("4821"), ImageSpec(module="tiny")).text != "general"
    assert r.modules() == {"tiny": 1}


def test_tasks_without_a_module_leave_no_sample_and_log_nothing(
        module_file: bytes, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from capd.domain.tasks import ValidationRules
    from capd.modules.samples import SampleBox
    from capd.store.base import Task, TaskState

    Library(tmp_path).save(module_file)
    box = SampleBox(Library(tmp_path), ValidationRules(1, 10**6, 1, 1), 3600.0, lambda: 0.0)
    for module in ("universal", "Not A Name", "other"):
        task = Task(1, 1, "ImageToTextTask", {"body": ""}, {"image": {"module": module}},
                    TaskState.SOLVED, 0, 0, 0.0, 0.0, None, None, 0, 0.0, {"text": "ab"}, None,
                    0, "127.0.0.1", None, None)
        assert box.keep(task) is False
    assert caplog.records == []
    assert not (tmp_path / "tiny" / "samples").exists()
