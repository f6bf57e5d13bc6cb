{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-chart, unless the release name already contains the chart name. */}}
{{- define "connector.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "connector.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The edge's pods: a name of their own, so that no selector of the workers matches them. */}}
{{- define "connector.edgeSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-edge" (include "connector.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "connector.labels" -}}
helm.sh/chart: {{ include "connector.chart" . }}
{{ include "connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kafka-8x8-connector
{{- end }}

{{- define "connector.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "connector.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "connector.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}
{{- end }}

{{/* Name of the Secret with the credentials: the existing one or the chart's. */}}
{{- define "connector.secretName" -}}
{{- default (printf "%s-credentials" (include "connector.fullname" .)) .Values.secrets.existingSecret }}
{{- end }}

{{- define "connector.sasl" -}}
{{- if hasPrefix "SASL" .Values.config.kafka.securityProtocol }}true{{ end }}
{{- end }}

{{- define "connector.tls" -}}
{{- if has .Values.config.kafka.securityProtocol (list "SSL" "SASL_SSL") }}true{{ end }}
{{- end }}

{{/*
Cross-field checks that values.schema.json cannot phrase clearly. Each failure names the value
to set. Included by every template that needs the values to be consistent.
*/}}
{{- define "connector.validate" -}}
{{- $v := .Values }}
{{- if and (not $v.secrets.existingSecret) (not $v.secrets.platform.secretName) (or (not $v.secrets.platformApiKey) (not $v.secrets.platformApiSecret)) }}
{{- fail "8x8 credentials are missing: set secrets.existingSecret to a Secret holding them, or secrets.platformApiKey and secrets.platformApiSecret" }}
{{- end }}
{{- if include "connector.sasl" . }}
{{- if not $v.config.kafka.saslUsername }}
{{- fail (printf "config.kafka.saslUsername is required with config.kafka.securityProtocol=%s" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if and (not $v.secrets.existingSecret) (not $v.secrets.kafkaSasl.secretName) (not $v.secrets.kafkaSaslPassword) }}
{{- fail (printf "secrets.kafkaSaslPassword (or secrets.existingSecret, or secrets.kafkaSasl.secretName) is required with config.kafka.securityProtocol=%s" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- end }}
{{- if and $v.config.kafka.tls.secretName (not (include "connector.tls" .)) }}
{{- fail (printf "config.kafka.tls.secretName is set but config.kafka.securityProtocol=%s uses no TLS (use SSL or SASL_SSL)" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if and (or $v.config.kafka.tls.certKey $v.config.kafka.tls.keyKey) (not (and $v.config.kafka.tls.certKey $v.config.kafka.tls.keyKey)) }}
{{- fail "config.kafka.tls.certKey and config.kafka.tls.keyKey go together (client certificate and its key)" }}
{{- end }}
{{- if and (or $v.config.kafka.tls.certKey $v.config.kafka.tls.keyKey) (not $v.config.kafka.tls.secretName) (not $v.config.kafka.tls.clientSecretName) }}
{{- fail "config.kafka.tls.secretName (or clientSecretName) is required when config.kafka.tls.certKey/keyKey are set" }}
{{- end }}
{{- if and $v.config.kafka.tls.clientSecretName (not (include "connector.tls" .)) }}
{{- fail (printf "config.kafka.tls.clientSecretName is set but config.kafka.securityProtocol=%s uses no TLS (use SSL or SASL_SSL)" $v.config.kafka.securityProtocol) }}
{{- end }}
{{- if and $v.config.kafka.tls.clientSecretName (not $v.config.kafka.tls.certKey) }}
{{- fail "config.kafka.tls.certKey and keyKey name the client certificate and key in config.kafka.tls.clientSecretName (Strimzi: user.crt, user.key)" }}
{{- end }}
{{- $r := $v.config.schemaRegistry.tls }}
{{- if and (or $r.certKey $r.keyKey) (not (and $r.certKey $r.keyKey $r.secretName)) }}
{{- fail "config.schemaRegistry.tls.certKey and keyKey go together, with config.schemaRegistry.tls.secretName" }}
{{- end }}
{{- if and $v.ingress.enabled $v.ingress.tls.enabled (not $v.ingress.tls.secretName) }}
{{- fail "ingress.tls.secretName is required when ingress.tls.enabled (the Secret with the certificate of ingress.host)" }}
{{- end }}
{{- if eq (int $v.webPort) (int $v.adminPort) }}
{{- fail (printf "adminPort (%d) must differ from webPort: the admin port is internal, the webhook port public" (int $v.adminPort)) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- end }}

{{/*
The non-secret CONNECTOR_* variables, as a YAML map of strings (sorted; config.extraEnv overrides
the chart's own). Shared by the ConfigMap and the hook Job (which runs before the ConfigMap exists).
*/}}
{{- define "connector.configEnv" -}}
{{- $env := include "connector.baseConfigEnv" . | fromYaml }}
{{- range $name, $value := .Values.config.extraEnv }}
{{- $_ := set $env $name ($value | toString) }}
{{- end }}
{{- range $name, $value := $env }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end }}

{{- define "connector.baseConfigEnv" -}}
{{- $c := .Values.config -}}
CONNECTOR_KAFKA_BOOTSTRAP_SERVERS: {{ $c.kafka.bootstrapServers | quote }}
CONNECTOR_KAFKA_SECURITY_PROTOCOL: {{ $c.kafka.securityProtocol | quote }}
{{- if include "connector.sasl" . }}
CONNECTOR_KAFKA_SASL_MECHANISM: {{ $c.kafka.saslMechanism | quote }}
CONNECTOR_KAFKA_SASL_USERNAME: {{ $c.kafka.saslUsername | quote }}
{{- end }}
{{- if include "connector.tls" . }}
CONNECTOR_KAFKA_SSL_CHECK_HOSTNAME: {{ $c.kafka.tls.checkHostname | toString | quote }}
{{- if and $c.kafka.tls.secretName $c.kafka.tls.caKey }}
CONNECTOR_KAFKA_SSL_CAFILE: {{ printf "/etc/connector/kafka-tls/%s" $c.kafka.tls.caKey | quote }}
{{- end }}
{{- if and $c.kafka.tls.clientSecretName $c.kafka.tls.certKey }}
CONNECTOR_KAFKA_SSL_CERTFILE: {{ printf "/etc/connector/kafka-client-tls/%s" $c.kafka.tls.certKey | quote }}
CONNECTOR_KAFKA_SSL_KEYFILE: {{ printf "/etc/connector/kafka-client-tls/%s" $c.kafka.tls.keyKey | quote }}
{{- else if and $c.kafka.tls.secretName $c.kafka.tls.certKey }}
CONNECTOR_KAFKA_SSL_CERTFILE: {{ printf "/etc/connector/kafka-tls/%s" $c.kafka.tls.certKey | quote }}
CONNECTOR_KAFKA_SSL_KEYFILE: {{ printf "/etc/connector/kafka-tls/%s" $c.kafka.tls.keyKey | quote }}
{{- end }}
{{- end }}
CONNECTOR_KAFKA_PARTITIONS: {{ $c.kafka.partitions | toString | quote }}
CONNECTOR_KAFKA_REPLICATION_FACTOR: {{ $c.kafka.replicationFactor | toString | quote }}
CONNECTOR_KAFKA_CLIENT_ID: {{ $c.kafka.clientId | quote }}
CONNECTOR_KAFKA_SESSION_TIMEOUT_S: {{ $c.kafka.sessionTimeoutSeconds | toString | quote }}
CONNECTOR_SCHEMA_REGISTRY_URL: {{ $c.schemaRegistry.url | quote }}
{{- if $c.schemaRegistry.username }}
CONNECTOR_SCHEMA_REGISTRY_USERNAME: {{ $c.schemaRegistry.username | quote }}
{{- end }}
{{- with $c.schemaRegistry.tls }}
{{- if and .secretName .caKey }}
CONNECTOR_SCHEMA_REGISTRY_SSL_CAFILE: {{ printf "/etc/connector/registry-tls/%s" .caKey | quote }}
{{- end }}
{{- if and .secretName .certKey }}
CONNECTOR_SCHEMA_REGISTRY_SSL_CERTFILE: {{ printf "/etc/connector/registry-tls/%s" .certKey | quote }}
CONNECTOR_SCHEMA_REGISTRY_SSL_KEYFILE: {{ printf "/etc/connector/registry-tls/%s" .keyKey | quote }}
{{- end }}
{{- end }}
CONNECTOR_TOPIC_COMMANDS: {{ $c.topics.commands | quote }}
CONNECTOR_TOPIC_COMMAND_RESULTS: {{ $c.topics.commandResults | quote }}
CONNECTOR_TOPIC_COMMANDS_DLQ: {{ $c.topics.commandsDlq | quote }}
CONNECTOR_TOPIC_EVENTS: {{ $c.topics.events | quote }}
CONNECTOR_TOPIC_TRANSCRIPTS: {{ $c.topics.transcripts | quote }}
CONNECTOR_TOPIC_WEBHOOKS_RAW: {{ $c.topics.webhooksRaw | quote }}
CONNECTOR_APP_ID: {{ $c.appId | quote }}
CONNECTOR_DATA_DIR: {{ .Values.dataDir | quote }}
CONNECTOR_TABLE_STORE: {{ $c.tableStore | quote }}
CONNECTOR_WEB_HOST: "0.0.0.0"
CONNECTOR_WEB_PORT: {{ .Values.webPort | toString | quote }}
CONNECTOR_ADMIN_PORT: {{ .Values.adminPort | toString | quote }}
CONNECTOR_LOG_LEVEL: {{ $c.logLevel | quote }}
CONNECTOR_LOG_FORMAT: {{ $c.logFormat | quote }}
CONNECTOR_PLATFORM_GENERATION: {{ $c.platform.generation | quote }}
CONNECTOR_PLATFORM_BASE_URL: {{ $c.platform.baseUrl | quote }}
CONNECTOR_PLATFORM_REGION: {{ $c.platform.region | quote }}
CONNECTOR_PLATFORM_TENANT_ID: {{ $c.platform.tenantId | quote }}
CONNECTOR_PLATFORM_CHANNEL_ID: {{ $c.platform.channelId | quote }}
CONNECTOR_PLATFORM_TIMEOUT_S: {{ $c.platform.timeoutSeconds | toString | quote }}
{{- end }}

{{/* Where the credentials Secret is mounted. */}}
{{- define "connector.secretsDir" -}}/etc/connector/secrets{{- end }}

{{/*
CONNECTOR_*_FILE variables for the secrets the configuration needs. Only those are set, so that a
missing optional key in an existingSecret is not an error. Argument: the root context.
*/}}
{{- define "connector.secretFileEnv" -}}
{{- $dir := include "connector.secretsDir" . }}
{{- $k := .Values.secrets.keys -}}
{{- with .Values.secrets.platform }}
{{- if .secretName }}
- name: CONNECTOR_PLATFORM_API_KEY_FILE
  value: {{ printf "/etc/connector/platform/%s" .apiKeyKey | quote }}
- name: CONNECTOR_PLATFORM_API_SECRET_FILE
  value: {{ printf "/etc/connector/platform/%s" .apiSecretKey | quote }}
{{- else }}
- name: CONNECTOR_PLATFORM_API_KEY_FILE
  value: {{ printf "%s/%s" $dir $k.platformApiKey | quote }}
- name: CONNECTOR_PLATFORM_API_SECRET_FILE
  value: {{ printf "%s/%s" $dir $k.platformApiSecret | quote }}
{{- end }}
{{- end }}
{{- include "connector.kafkaSecretFileEnv" . }}
{{- end }}

{{/* The CONNECTOR_*_FILE variables of the Kafka and registry secrets only (the hook Job's). */}}
{{- define "connector.kafkaSecretFileEnv" -}}
{{- $dir := include "connector.secretsDir" . }}
{{- $k := .Values.secrets.keys }}
{{- if and (include "connector.sasl" .) .Values.secrets.kafkaSasl.secretName }}
- name: CONNECTOR_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "/etc/connector/kafka-sasl/%s" .Values.secrets.kafkaSasl.passwordKey | quote }}
{{- else if include "connector.sasl" . }}
- name: CONNECTOR_KAFKA_SASL_PASSWORD_FILE
  value: {{ printf "%s/%s" $dir $k.kafkaSaslPassword | quote }}
{{- end }}
{{- if and (include "connector.tls" .) .Values.config.kafka.tls.keyPasswordInSecret }}
- name: CONNECTOR_KAFKA_SSL_KEY_PASSWORD_FILE
  value: {{ printf "%s/%s" $dir $k.kafkaSslKeyPassword | quote }}
{{- end }}
{{- if and .Values.config.schemaRegistry.username .Values.secrets.schemaRegistry.secretName }}
- name: CONNECTOR_SCHEMA_REGISTRY_PASSWORD_FILE
  value: {{ printf "/etc/connector/registry-credentials/%s" .Values.secrets.schemaRegistry.passwordKey | quote }}
{{- else if .Values.config.schemaRegistry.username }}
- name: CONNECTOR_SCHEMA_REGISTRY_PASSWORD_FILE
  value: {{ printf "%s/%s" $dir $k.schemaRegistryPassword | quote }}
{{- end }}
{{- end }}

{{/* Data of the chart-managed credentials Secret (only keys with a value). */}}
{{- define "connector.secretData" -}}
{{- $s := .Values.secrets }}
{{- $k := .Values.secrets.keys }}
{{- range $field := list "platformApiKey" "platformApiSecret" "kafkaSaslPassword" "kafkaSslKeyPassword" "schemaRegistryPassword" }}
{{- $value := get $s $field }}
{{- if $value }}
{{ get $k $field }}: {{ $value | toString | b64enc | quote }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Whether any credential comes from the shared credentials Secret (existingSecret or the chart's):
not when each has a Secret of its own. Argument: the root context.
*/}}
{{- define "connector.needsSharedSecret" -}}
{{- if or (not .Values.secrets.platform.secretName) (include "connector.hookNeedsSecret" .) }}true{{ end }}
{{- end }}

{{/*
Whether the hook Job needs the credentials Secret: for a Kafka or registry password that has no
Secret of its own. Argument: the root context.
*/}}
{{- define "connector.hookNeedsSecret" -}}
{{- $v := .Values }}
{{- if or (and (include "connector.sasl" .) (not $v.secrets.kafkaSasl.secretName)) (and (include "connector.tls" .) $v.config.kafka.tls.keyPasswordInSecret) (and $v.config.schemaRegistry.username (not $v.secrets.schemaRegistry.secretName)) }}true{{ end }}
{{- end }}

{{/*
The volumes of the credentials that have a Secret of their own (secrets.platform, kafkaSasl,
schemaRegistry; config.kafka.tls.clientSecretName; config.schemaRegistry.tls), each mounted under
/etc/connector/<volume name>. Arguments: ctx (the root context), platform (whether the 8x8 one).
*/}}
{{- define "connector.ownSecretVolumes" -}}
{{- range $name, $secret := include "connector.ownSecrets" . | fromYaml }}
- name: {{ $name }}
  secret:
    secretName: {{ $secret }}
    defaultMode: 0440
{{- end }}
{{- end }}

{{/* Their mounts, for the volumes of connector.ownSecretVolumes (same arguments). */}}
{{- define "connector.ownSecretMounts" -}}
{{- range $name, $secret := include "connector.ownSecrets" . | fromYaml }}
- name: {{ $name }}
  mountPath: /etc/connector/{{ $name }}
  readOnly: true
{{- end }}
{{- end }}

{{- define "connector.ownSecrets" -}}
{{- $v := .ctx.Values }}
{{- if and .platform $v.secrets.platform.secretName }}
platform: {{ $v.secrets.platform.secretName | quote }}
{{- end }}
{{- if and (include "connector.sasl" .ctx) $v.secrets.kafkaSasl.secretName }}
kafka-sasl: {{ $v.secrets.kafkaSasl.secretName | quote }}
{{- end }}
{{- if and $v.config.schemaRegistry.username $v.secrets.schemaRegistry.secretName }}
registry-credentials: {{ $v.secrets.schemaRegistry.secretName | quote }}
{{- end }}
{{- if and (include "connector.tls" .ctx) $v.config.kafka.tls.clientSecretName }}
kafka-client-tls: {{ $v.config.kafka.tls.clientSecretName | quote }}
{{- end }}
{{- if $v.config.schemaRegistry.tls.secretName }}
registry-tls: {{ $v.config.schemaRegistry.tls.secretName | quote }}
{{- end }}
{{- end }}
