{{/* Names and labels. */}}
{{- define "hydra.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "hydra.fullname" -}}
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

{{- define "hydra.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hydra.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "hydra.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hydra.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Chroma server objects: a name label of their own, so that the server's Deployment, Service and
     NetworkPolicy selectors (name + instance) never match a Chroma pod. */}}
{{- define "hydra.chromaSelectorLabels" -}}
app.kubernetes.io/name: {{ include "hydra.name" . }}-chroma
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "hydra.chromaLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "hydra.chromaSelectorLabels" . }}
app.kubernetes.io/component: chroma
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The Secret holding the Chroma server's token (chroma.mode=server), and its key. */}}
{{- define "hydra.chromaTokenSecretName" -}}
{{- default (printf "%s-chroma-auth" (include "hydra.fullname" .)) .Values.chroma.server.auth.existingSecret }}
{{- end }}

{{- define "hydra.chromaTokenSecretKey" -}}
{{- if .Values.chroma.server.auth.existingSecret }}{{ .Values.chroma.server.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The port of a URL: include "hydra.urlPort" (dict "url" URL "default" PORT). */}}
{{- define "hydra.urlPort" -}}
{{- $port := regexFind ":[0-9]+$" (urlParse .url).host }}
{{- if $port }}{{ trimPrefix ":" $port }}{{ else }}{{ .default }}{{ end }}
{{- end }}

{{/* The Secret holding the bearer token, and its key. */}}
{{- define "hydra.tokenSecretName" -}}
{{- default (printf "%s-auth" (include "hydra.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{- define "hydra.tokenSecretKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The data directory: the claim's mount path, or the node path mounted at the same place. */}}
{{- define "hydra.dataHome" -}}
{{- default .Values.persistence.mountPath .Values.persistence.hostPath }}
{{- end }}

{{/* The volume holding relay sockets, and HYDRA_RUNTIME_DIR: a directory Hydra creates inside it,
     because Hydra insists that its runtime directory is owned by its own uid (volume roots are not). */}}
{{- define "hydra.runtimeMount" -}}
{{- default "/run/hydra" .Values.docker.runtimeHostPath }}
{{- end }}

{{- define "hydra.runtimeDir" -}}
{{- printf "%s/relays" (include "hydra.runtimeMount" . | trimSuffix "/") }}
{{- end }}

{{/* HYDRA_CHROMA_URL for the server and external modes; empty for embedded. */}}
{{- define "hydra.chromaUrl" -}}
{{- if eq .Values.chroma.mode "server" }}
{{- printf "http://%s-chroma:%d" (include "hydra.fullname" .) (int .Values.chroma.server.port) }}
{{- else if eq .Values.chroma.mode "external" }}
{{- required "chroma.externalUrl is required when chroma.mode is external" .Values.chroma.externalUrl }}
{{- end }}
{{- end }}

{{/* Hydra's settings as HYDRA_* variables: each name is a field of hydra_sandbox.settings.HydraSettings. */}}
{{/* The namespace of agent pods (kubernetes backend): kubernetes.namespace, else the release's. */}}
{{- define "hydra.agentNamespace" -}}
{{- .Values.kubernetes.namespace | default .Release.Namespace -}}
{{- end }}

{{- define "hydra.env" -}}
- name: HYDRA_TRANSPORT
  value: http
- name: HYDRA_HTTP_HOST
  value: "0.0.0.0"
- name: HYDRA_HTTP_PORT
  value: {{ .Values.service.port | quote }}
- name: HYDRA_HTTP_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "hydra.tokenSecretName" . }}
      key: {{ include "hydra.tokenSecretKey" . }}
- name: HYDRA_DATA_HOME
  value: {{ include "hydra.dataHome" . | quote }}
- name: HYDRA_RUNTIME_DIR
  value: {{ include "hydra.runtimeDir" . | quote }}
- name: HYDRA_EMBEDDING_MODEL_DIR
  value: {{ .Values.embeddingModel.dir | quote }}
{{- with (include "hydra.chromaUrl" .) }}
- name: HYDRA_CHROMA_URL
  value: {{ . | quote }}
{{- end }}
- name: HYDRA_MODEL
  value: {{ .Values.config.model | quote }}
{{- if eq .Values.chroma.mode "server" }}
- name: HYDRA_CHROMA_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "hydra.chromaTokenSecretName" . }}
      key: {{ include "hydra.chromaTokenSecretKey" . }}
{{- else if and (eq .Values.chroma.mode "external") .Values.chroma.externalToken.existingSecret }}
- name: HYDRA_CHROMA_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ .Values.chroma.externalToken.existingSecret }}
      key: {{ .Values.chroma.externalToken.existingSecretKey }}
{{- end }}
{{- with .Values.config.modelBaseUrl }}
- name: HYDRA_MODEL_BASE_URL
  value: {{ . | quote }}
{{- end }}
{{- if or .Values.model.apiKey.existingSecret .Values.model.apiKey.value }}
- name: HYDRA_MODEL_API_KEY
  valueFrom:
    secretKeyRef:
      {{- if .Values.model.apiKey.existingSecret }}
      name: {{ .Values.model.apiKey.existingSecret }}
      key: {{ .Values.model.apiKey.existingSecretKey }}
      {{- else }}
      name: {{ include "hydra.fullname" . }}-model
      key: api-key
      {{- end }}
{{- end }}
- name: HYDRA_BACKEND
  value: {{ .Values.backend | quote }}
{{- if eq .Values.backend "kubernetes" }}
- name: HYDRA_KUBERNETES_NAMESPACE
  value: {{ include "hydra.agentNamespace" . | quote }}
- name: HYDRA_GATEWAY_IMAGE
  value: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
{{- with .Values.kubernetes.runtimeClassName }}
- name: HYDRA_KUBERNETES_RUNTIME_CLASS
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetes.seccompLocalhostProfile }}
- name: HYDRA_KUBERNETES_SECCOMP_PROFILE
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kubernetes.warmPool }}
- name: HYDRA_KUBERNETES_WARM_POOL
  value: {{ . | quote }}
{{- end }}
{{- end }}
- name: HYDRA_MAX_CONCURRENT_AGENTS
  value: {{ .Values.config.maxConcurrentAgents | quote }}
{{- with .Values.config.agentImage }}
- name: HYDRA_AGENT_IMAGE
  value: {{ . | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.config.agentUid) }}
- name: HYDRA_AGENT_UID
  value: {{ .Values.config.agentUid | quote }}
{{- end }}
{{- if not (kindIs "invalid" .Values.config.diskWarningBytes) }}
- name: HYDRA_DISK_WARNING_BYTES
  value: {{ .Values.config.diskWarningBytes | int64 | quote }}
{{- end }}
{{- if .Values.profiles }}
- name: HYDRA_PROFILES_DIR
  value: /etc/hydra/profiles
{{- end }}
{{- if .Values.policies }}
- name: HYDRA_POLICIES_DIR
  value: /etc/hydra/policies
{{- end }}
- name: HYDRA_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
{{- with .Values.docker.host }}
- name: DOCKER_HOST
  value: {{ . | quote }}
{{- end }}
{{- if .Values.docker.tlsSecret }}
- name: DOCKER_TLS_VERIFY
  value: "1"
- name: DOCKER_CERT_PATH
  value: /etc/hydra/docker-tls
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}
