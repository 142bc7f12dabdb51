#!/usr/bin/env bash
# Puts the Java client's jars in target/java-lib: downloads the pinned wheel
# (its hash checked by pip) once and extracts only the five jars the tests
# need. Does nothing when they are there.
set -euo pipefail
cd "$(dirname "$0")/../../.."
lib=target/java-lib
jars=(kafka-clients.jar slf4j-api.jar lz4-java.jar snappy-java.jar zstd-jni.jar)
have=1
for j in "${jars[@]}"; do [ -f "$lib/$j" ] || have=0; done
[ "$have" = 1 ] && exit 0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary :all: --require-hashes \
  -r tests/clients/java/requirements.txt -d "$tmp"
mkdir -p "$lib"
python3 - "$tmp" "$lib" "${jars[@]}" <<'PY'
import glob, sys, zipfile
tmp, lib, jars = sys.argv[1], sys.argv[2], sys.argv[3:]
(wheel,) = glob.glob(f"{tmp}/shigawire_apache_flink_libraries-*.whl")
with zipfile.ZipFile(wheel) as w:
    for j in jars:
        with open(f"{lib}/{j}", "wb") as out:
            out.write(w.read(f"pyflink/lib/{j}"))
with zipfile.ZipFile(f"{lib}/kafka-clients.jar") as k:
    props = k.read("kafka/kafka-version.properties").decode()
if "version=3.9.1" not in props.split():
    sys.exit(f"kafka-clients.jar is not 3.9.1: {props}")
PY
