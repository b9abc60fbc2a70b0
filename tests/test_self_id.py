from collector.docker.self_id import id_from_cgroup, id_from_mountinfo, own_container_id

CID = "3f1c9a2b" * 8


def test_mountinfo_names_the_container_directory() -> None:
    text = (
        "1500 1400 0:45 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n"
        f"1510 1500 254:1 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda rw\n"
        f"1511 1500 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
    )
    assert id_from_mountinfo(text) == CID


def test_cgroup_v1_and_systemd_forms() -> None:
    assert id_from_cgroup(f"12:memory:/docker/{CID}\n11:cpu:/docker/{CID}\n") == CID
    assert id_from_cgroup(f"0::/system.slice/docker-{CID}.scope\n") == CID
    assert id_from_cgroup("0::/\n") is None
    assert id_from_cgroup(f"0::/user.slice/{CID}\n") is None  # not a docker path


def test_outside_a_container_there_is_no_own_id(tmp_path) -> None:
    (tmp_path / "mountinfo").write_text("22 1 254:1 / / rw - ext4 /dev/vda rw\n")
    (tmp_path / "cgroup").write_text("0::/init.scope\n")
    assert own_container_id(str(tmp_path)) is None
    (tmp_path / "cgroup").write_text(f"0::/system.slice/docker-{CID}.scope\n")
    assert own_container_id(str(tmp_path)) == CID
