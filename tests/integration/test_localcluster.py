"""make cluster-up is idempotent and make cluster-down leaves no process behind."""

from __future__ import annotations

from pathlib import Path

from tests.support.kube import localcluster_module


def test_up_reuses_a_healthy_cluster_and_down_stops_every_process(tmp_path: Path) -> None:
    lc = localcluster_module()
    cluster = lc.Cluster(root=tmp_path / "cluster")
    try:
        kubeconfig = cluster.up()
        assert kubeconfig.exists()
        first = {name: p["pid"] for name, p in cluster.state()["processes"].items()}
        assert set(first) == set(lc.COMPONENTS)
        assert all(lc.Cluster.alive(pid) for pid in first.values())

        cluster.up()  # a second up finds it healthy and starts nothing
        again = {name: p["pid"] for name, p in cluster.state()["processes"].items()}
        assert again == first
    finally:
        cluster.down()
    assert not any(lc.Cluster.alive(pid) for pid in first.values())
    assert cluster.strays() == []
    assert not (tmp_path / "cluster").exists()


def test_down_also_stops_processes_whose_state_was_lost(tmp_path: Path) -> None:
    lc = localcluster_module()
    cluster = lc.Cluster(root=tmp_path / "cluster")
    try:
        cluster.up()
        pids = [p["pid"] for p in cluster.state()["processes"].values()]
        cluster.state_file.unlink()  # as if a start was interrupted before saving
        assert sorted(cluster.strays()) == sorted(pids)
    finally:
        cluster.down()
    assert not any(lc.Cluster.alive(pid) for pid in pids)
