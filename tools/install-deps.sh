#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs the Debian packages strata needs to build, test and run its demo (run as root).
set -euo pipefail
packages=(
	# build
	gcc pkg-config meson ninja-build
	libfuse3-dev librocksdb-dev libcurl4-openssl-dev libzstd-dev libssl-dev zlib1g-dev
	libjansson-dev libcmocka-dev
	# the containerd snapshotter (snap/): gRPC C core, protobuf-c and its compiler
	libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
	# fuzzing (tests/fuzz): clang with libFuzzer
	clang libclang-rt-14-dev
	# run
	fuse3
	# tests and demo: the real registry, image tools, ground truth extractors
	python3 python3-pytest docker-registry skopeo umoci tar gzip zstd busybox-static attr
	util-linux curl nginx pigz
	# bsdtar, for the sparse files libarchive writes (tests/integration/test_sparse.py)
	libarchive-tools
	# Basic auth tests: bcrypt htpasswd entries for Distribution
	apache2-utils
	# eStargz images for tests: ctr-remote converts with a private containerd
	stargz-snapshotter
	# bench/cold-start: the containerd baseline, namespaces and traffic shaping, read tracing
	containerd runc iproute2 strace
	# bench/warm: the same tree as squashfs through squashfuse, fio for the reads
	squashfs-tools squashfuse fio
	# the podman additional layer store tests (tests/integration/test_podman.py)
	podman
)
export DEBIAN_FRONTEND=noninteractive
missing=()
for p in "${packages[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
