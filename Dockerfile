# The sparselora image the Kubernetes manifest (cluster-config/kubernetes.yaml) runs: the CLI with
# every module built, started through ./sparselora (JDK 25 flags included). One image for both
# roles: `node --role coordinator …` and `node --role worker …` (see actors/README.md, "Clusters").
#   docker build -t sparselora:0.1.0 .
FROM eclipse-temurin:25-jdk AS build
WORKDIR /src
COPY . .
RUN ./mvnw -B -ntp -q -DskipTests -pl arc-agi -am package && touch arc-agi/target/.sparselora-built

FROM eclipse-temurin:25-jdk
WORKDIR /opt/sparselora
COPY --from=build /root/.m2/repository /root/.m2/repository
COPY --from=build /src /opt/sparselora
# Artery (cluster traffic) and the control API
EXPOSE 25520 7070
ENTRYPOINT ["/opt/sparselora/sparselora"]
CMD ["--help"]
