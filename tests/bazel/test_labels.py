"""Where a target's executable lies under bazel-bin, and which labels are refused."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from databuild.executor.bazel import executable_path


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("//jobs:ingest", "jobs/ingest"),
        ("//jobs", "jobs/jobs"),
        ("//deep/pkg:tool", "deep/pkg/tool"),
        ("//:tool", "tool"),
        ("//pkg:sub/tool.sh", "pkg/sub/tool.sh"),
        ("@//pkg:tool", "pkg/tool"),
        ("@rules_x//pkg:tool", "external/rules_x/pkg/tool"),
    ],
)
def test_executable_is_named_after_the_rule_in_its_package(target: str, path: str) -> None:
    assert executable_path(target) == PurePosixPath(path)


@pytest.mark.parametrize("target", ["jobs:ingest", ":ingest", "ingest", "//a b:c", "//pkg:", ""])
def test_relative_or_malformed_labels_are_refused(target: str) -> None:
    with pytest.raises(ValueError, match="is not an absolute Bazel label"):
        executable_path(target)


@pytest.mark.parametrize("target", ["//...", "//jobs/...", "//jobs:all", "//jobs:*"])
def test_target_patterns_are_refused_as_not_one_executable(target: str) -> None:
    with pytest.raises(ValueError, match="names a set of targets"):
        executable_path(target)
