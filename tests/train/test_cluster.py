"""The pieces of multi-worker training that one process can check: TF_CONFIG, roles, shards,
steps, the chief's resume state, and the one-line message for a lost worker."""

import json

import numpy as np
import pytest
import tensorflow as tf

from effnet_tl.data.examples import ArrayExamples, DatasetExamples, FileExamples
from effnet_tl.train import cluster
from effnet_tl.train.cluster import Worker


def test_tf_config_counts_chief_and_workers_and_rejects_bad_json():
    config = {"cluster": {"chief": ["a:1"], "worker": ["b:2", "c:3"]},
              "task": {"type": "worker", "index": 1}}
    assert cluster.tf_config_workers({"TF_CONFIG": json.dumps(config)}) == 3
    assert cluster.tf_config_workers({}) == 0
    with pytest.raises(ValueError, match=r"TF_CONFIG is not valid JSON: '\{cluster'"):
        cluster.tf_config_workers({"TF_CONFIG": "{cluster"})


def test_file_shards_are_disjoint_cover_everything_and_keep_labels():
    paths = tuple(f"/data/{i:02d}.png" for i in range(11))
    labels = np.arange(11) % 3
    examples = FileExamples(paths=paths, labels=labels, class_names=("a", "b", "c"))
    shards = [cluster.shard_examples(examples, Worker(i, 3)) for i in range(3)]
    assert sorted(p for shard in shards for p in shard.paths) == list(paths)
    assert [len(shard) for shard in shards] == [4, 4, 3]
    for shard in shards:
        np.testing.assert_array_equal(shard.labels, [int(p[6:8]) % 3 for p in shard.paths])
    assert cluster.shard_examples(examples, Worker()) is examples


def test_array_and_stream_shards():
    arrays = ArrayExamples(images=np.arange(10 * 4 * 4 * 3, dtype=np.uint8).reshape(10, 4, 4, 3),
                           labels=np.arange(10) % 2, class_names=("a", "b"))
    shard = cluster.shard_examples(arrays, Worker(1, 2))
    np.testing.assert_array_equal(shard.images, arrays.images[1::2])

    stream = DatasetExamples(dataset=tf.data.Dataset.range(7), class_names=("a",),
                             num_examples=7)
    shard = cluster.shard_examples(stream, Worker(0, 2))
    assert [int(v) for v in shard.dataset] == [0, 2, 4, 6] and shard.num_examples == 4


def test_every_worker_gets_the_same_whole_steps():
    # 37 images over 2 workers: shards of 19 and 18; per-worker batch 4 -> 4 steps for both.
    assert cluster.steps_per_worker(num_examples=37, per_worker_batch=4, workers=2) == 4
    assert cluster.steps_per_worker(num_examples=3, per_worker_batch=4, workers=2) == 1


def test_single_process_agreement_is_trivial_and_roles_default_to_chief():
    strategy = tf.distribute.get_strategy()
    assert cluster.worker_of(strategy) == Worker(0, 1) and Worker().is_chief
    assert cluster.any_worker(strategy, True) and not cluster.any_worker(strategy, False)
    assert cluster.all_agree(strategy, 3.0)
    assert cluster.broadcast_from_chief(strategy, {"flips": False}) == {"flips": False}


def test_resume_state_is_copied_from_the_chief_and_replaces_the_workers(tmp_path):
    chief, own = tmp_path / "chief", tmp_path / "own"
    (chief / "backup" / "head").mkdir(parents=True)
    (chief / "backup" / "head" / "weights.h5").write_bytes(b"w")
    for name in ("config.json", "phases.json", "history.csv"):
        (chief / name).write_text(name)
    (chief / "report.json").write_text("{}")
    (own / "backup" / "stale").mkdir(parents=True)
    cluster.copy_resume_state(chief, own)
    assert (own / "history.csv").read_text() == "history.csv"
    assert (own / "backup" / "head" / "weights.h5").read_bytes() == b"w"
    assert not (own / "backup" / "stale").exists()
    assert not (own / "report.json").exists()  # only what resuming needs


def test_worker_folders(tmp_path):
    assert cluster.worker_folder(tmp_path / "run", Worker(0, 2)) == tmp_path / "run"
    other = cluster.worker_folder(tmp_path / "run", Worker(1, 2))
    assert other.is_dir() and other != tmp_path / "run" and "worker1" in other.name
    (other / "backup").mkdir()  # what a killed worker leaves behind
    again = cluster.worker_folder(tmp_path / "run", Worker(1, 2))
    assert again == other and not any(again.iterdir())  # the next start empties it
    assert cluster.worker_folder(tmp_path / "other-run", Worker(1, 2)) != other
    for folder in (again, cluster.worker_folder(tmp_path / "other-run", Worker(1, 2))):
        folder.rmdir()


def test_lost_worker_messages_are_one_line():
    text = ("{{function_node __wrapped__CollectiveReduceV2_device_/job:worker/replica:0/task:0/"
            "device:CPU:0}} Collective ops is aborted by: Error reported from /job:worker/task:1:"
            " The following tasks are unhealthy (stopped sending heartbeats):\n"
            "/job:worker/replica:0/task:1\nThe tasks have crashed.")
    assert cluster.describe_peer_error(RuntimeError(text)) == \
        "worker task 1 stopped sending heartbeats (killed, crashed or unreachable)"
    graph = cluster.describe_peer_error(RuntimeError(
        "Graph execution error:\n\nDetected at node x\nCollective ops is aborted by: "
        "Socket closed"))
    assert graph == ("another worker stopped or cannot be reached (RuntimeError: Detected at "
                     "node x)")
    closed = cluster.describe_peer_error(RuntimeError(
        "{{function_node x}} Collective ops is aborted by: Socket closed\nmore"))
    assert closed == ("another worker stopped or cannot be reached (RuntimeError: Collective ops "
                      "is aborted by: Socket closed)")


@pytest.mark.xdist_group("tf_cluster")  # with the multi-worker tests: one cluster at a time
def test_a_worker_whose_partners_never_come_says_so_and_gives_up(tmp_path):
    # TF_CONFIG names two workers; only worker 0 starts. TensorFlow alone waits silently for
    # ever (and ignores SIGTERM); effnet_tl says what it waits for and stops after the timeout.
    import os
    import subprocess
    import sys
    import time

    from effnet_tl.launch import free_ports, tf_configs

    config = tf_configs([f"localhost:{port}" for port in free_ports(2)])[0]
    env = dict(os.environ, TF_CONFIG=json.dumps(config), EFFNET_TL_CONNECT_TIMEOUT="6",
               TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-c", "from effnet_tl.train.strategy import get_strategy; "
                               "get_strategy('auto')"],
        capture_output=True, text=True, env=env, timeout=120)
    assert time.monotonic() - started < 60
    assert completed.returncode != 0
    lines = [line for line in completed.stderr.splitlines() if line.startswith("effnet_tl:")]
    assert lines[0].startswith("effnet_tl: worker 0 of 2: waiting for the other workers")
    assert lines[-1].startswith("effnet_tl: error: worker 0 of 2: the other workers (")
    assert "did not all connect within 6 s" in lines[-1], completed.stderr[-2000:]


def test_connect_timeout_from_the_environment():
    assert cluster.connect_timeout({}) == cluster.CONNECT_TIMEOUT
    with pytest.raises(ValueError, match="EFFNET_TL_CONNECT_TIMEOUT='soon'"):
        cluster.connect_timeout({"EFFNET_TL_CONNECT_TIMEOUT": "soon"})
