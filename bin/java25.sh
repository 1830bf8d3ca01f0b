# Sourced (POSIX sh) by ./mvnw, ./sparselora and .ci/run: selects a JDK 25, since the default
# `java` on these machines is 17. Honors JAVA_HOME when it already points at a JDK 25.
_sl_is25() { [ -x "$1/bin/java" ] && "$1/bin/java" -version 2>&1 | head -n 1 | grep -q '"25'; }
if [ -z "${JAVA_HOME:-}" ] || ! _sl_is25 "$JAVA_HOME"; then
  for _sl_c in /usr/lib/jvm/temurin-25-jdk-amd64 /usr/lib/jvm/temurin-25* /usr/lib/jvm/*-25* /usr/lib/jvm/jdk-25* /opt/jdk-25*; do
    if _sl_is25 "$_sl_c"; then JAVA_HOME="$_sl_c"; export JAVA_HOME; break; fi
  done
fi
if [ -z "${JAVA_HOME:-}" ] || ! _sl_is25 "$JAVA_HOME"; then
  echo "sparselora: JDK 25 is required and none was found; install Temurin 25 and set JAVA_HOME to it." >&2
  exit 1
fi
PATH="$JAVA_HOME/bin:$PATH"; export PATH
