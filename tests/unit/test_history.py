"""Upstream history vs what a kernel's cases did (harness.plugin.history)."""

from harness.plugin import history

MERGED = {"system_suspend": (5, 19), "system_off2": (6, 13), "acpi_notify": None}


def res(**families):
    return [{"family": f, "status": s} for f, sts in families.items() for s in sts]


def test_stock_kernels_follow_history():
    r = res(system_suspend=["pass", "fail"], system_off2=["skip", "skip"], acpi_notify=["skip"])
    assert history.differences(MERGED, (6, 12), r) == []
    assert history.differences(MERGED, (5, 10), r) == [
        "system_suspend ran on 5.10 (merged in 5.19), expected skipped: backported?"]


def test_a_skip_where_the_feature_is_merged_is_named():
    r = res(system_suspend=["pass"], system_off2=["skip", "pass"], acpi_notify=["pass"])
    assert history.differences(MERGED, (7, 2), r) == [
        "system_off2 partly skipped: ['skip', 'pass'] on 7.2 (merged in 6.13), expected ran",
        "acpi_notify ran on 7.2 (unmerged), expected skipped: the series applied?"]


def test_information_only_for_a_developers_kernel():
    from harness.kernel.kernels import Kernel
    r = res(system_suspend=["pass"], system_off2=["pass"], acpi_notify=["skip"])
    own = Kernel("path:/x/Image", "arm64", None, "6.12.9-mine", None, None, "/x/Image")
    stock = Kernel("debian:6.12", "arm64", None, "6.12.9", None, None, "Debian",
                   debian=("trixie", "6.12.9-1"))
    assert history.information(own, MERGED, r) == [
        "system_off2 ran on 6.12 (merged in 6.13), expected skipped: backported?"]
    assert history.information(stock, MERGED, r) == []
