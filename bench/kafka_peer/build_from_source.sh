#!/usr/bin/env bash
# Builds the Kafka cleaner peer WITHOUT Maven Central: compiles Apache Kafka's own storage code
# (and only the classes it reaches) from a Kafka source checkout with plain javac, against jars
# that Debian packages, plus the small shims in ./shims (see shims/README.md).
#
#   KAFKA_SOURCE=/path/to/kafka            a source tree (has clients/, storage/, ...), or
#   KAFKA_SOURCE=/path/to/kafka.git        a git directory, with KAFKA_SOURCE_REV (default HEAD)
#   bench/kafka_peer/build_from_source.sh
#
# Needs Kafka 4.1 or later (where the cleaner moved to Java, in the storage module), a JDK 17+
# and: apt-get install libjackson2-databind-java libargparse4j-java libslf4j-java
#      libzstd-jni-java liblz4-java libsnappy-java libcaffeine-java libre2j-java
# Writes target/source-build/classes and target/peer.classpath (what the wrapper runs).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
out="$here/target/source-build"
src="${KAFKA_SOURCE:?set KAFKA_SOURCE to a Kafka source tree or git directory}"
rev="${KAFKA_SOURCE_REV:-HEAD}"
jars=/usr/share/java

rm -rf "$out"
mkdir -p "$out"
if [ -d "$src/clients" ]; then
    tree="$src"
    commit="$(git -C "$src" rev-parse HEAD 2>/dev/null || echo unknown)"
else
    tree="$out/kafka-src"
    mkdir -p "$tree"
    commit="$(git --git-dir="$src" rev-parse "$rev^{commit}")"
    git --git-dir="$src" archive "$commit" generator clients/src/main server-common/src/main \
        storage/src/main storage/api/src/main gradle.properties | tar -x -C "$tree"
fi
version="$(sed -n 's/^version=//p' "$tree/gradle.properties")"
if [ ! -f "$tree/storage/src/main/java/org/apache/kafka/storage/internals/log/Cleaner.java" ]; then
    echo "build_from_source: $tree has no Java Cleaner (Kafka $version); need Kafka 4.1+" >&2
    exit 1
fi
for j in jackson-databind jackson-core jackson-annotations argparse4j slf4j-api slf4j-simple \
         zstd-jni lz4-java snappy-java caffeine re2j; do
    [ -f "$jars/$j.jar" ] || { echo "build_from_source: missing $jars/$j.jar (see the apt-get line in $0)" >&2; exit 1; }
done

# 1. Kafka's message generator, then the generated request/response and record classes.
gen_cp="$jars/jackson-databind.jar:$jars/jackson-core.jar:$jars/jackson-annotations.jar:$jars/argparse4j.jar"
javac -nowarn -proc:none -d "$out/generator" -cp "$gen_cp" \
    -sourcepath "$tree/generator/src/main/java:$here/shims" \
    "$tree/generator/src/main/java/org/apache/kafka/message/MessageGenerator.java"
generate() {  # package, input dir, generators...
    local pkg="$1" in="$2"; shift 2
    java -cp "$out/generator:$gen_cp" org.apache.kafka.message.MessageGenerator \
        -p "$pkg" -o "$out/generated/${pkg//.//}" -i "$in" "$@" >/dev/null
}
generate org.apache.kafka.common.message "$tree/clients/src/main/resources/common/message" \
    -t ApiMessageTypeGenerator -m MessageDataGenerator JsonConverterGenerator
generate org.apache.kafka.server.log.remote.metadata.storage.generated "$tree/storage/src/main/resources/message" \
    -m MessageDataGenerator JsonConverterGenerator -t MetadataRecordTypeGenerator MetadataJsonConvertersGenerator

# 2. The harness; javac compiles from -sourcepath only the Kafka classes it reaches.
run_cp="$jars/slf4j-api.jar:$jars/slf4j-simple.jar:$jars/zstd-jni.jar:$jars/lz4-java.jar:$jars/snappy-java.jar"
run_cp="$run_cp:$jars/caffeine.jar:$jars/jackson-databind.jar:$jars/jackson-core.jar:$jars/jackson-annotations.jar:$jars/re2j.jar"
sp="$tree/clients/src/main/java:$tree/server-common/src/main/java:$tree/storage/api/src/main/java"
sp="$sp:$tree/storage/src/main/java:$out/generated:$here/shims"
javac -nowarn -proc:none -d "$out/classes" -cp "$run_cp" -sourcepath "$sp" \
    "$here/src/main/java/logkernel/bench/KafkaCleanerPeer.java"
mkdir -p "$out/classes/kafka"
printf 'version=%s\ncommitId=%s\n' "$version" "$commit" > "$out/classes/kafka/kafka-version.properties"

echo "$out/classes:$run_cp" > "$here/target/peer.classpath"
echo "build_from_source: Kafka $version ($commit): $(find "$out/classes" -name '*.class' | wc -l) classes"
