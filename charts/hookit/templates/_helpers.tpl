{{/* Chart name. */}}
{{- define "hookit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (release-scoped). */}}
{{- define "hookit.fullname" -}}
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

{{- define "hookit.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "hookit.labels" -}}
helm.sh/chart: {{ include "hookit.chart" . }}
{{ include "hookit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: hookit
{{- end }}

{{- define "hookit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hookit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels for one component: include "hookit.componentLabels" (list $ "worker") */}}
{{- define "hookit.componentLabels" -}}
{{ include "hookit.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "hookit.componentSelectorLabels" -}}
{{ include "hookit.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end }}

{{- define "hookit.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end }}

{{- define "hookit.controllerServiceAccountName" -}}
{{- if .Values.controller.serviceAccount.create }}
{{- default (printf "%s-controller" (include "hookit.fullname" .)) .Values.controller.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.controller.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "hookit.workerServiceAccountName" -}}
{{- if .Values.worker.serviceAccount.create }}
{{- default (printf "%s-worker" (include "hookit.fullname" .)) .Values.worker.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.worker.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* Secret created by the chart for values given inline. */}}
{{- define "hookit.secretName" -}}
{{- printf "%s-secrets" (include "hookit.fullname" .) }}
{{- end }}

{{/* Fail early when the required settings are missing. */}}
{{- define "hookit.validate" -}}
{{- if and (not .Values.database.existingSecret) (not .Values.database.url) }}
{{- fail "hookit: set database.existingSecret (a Secret with key 'url') or database.url" }}
{{- end }}
{{- if and (not .Values.masterKey.existingSecret) (not .Values.masterKey.value) }}
{{- fail "hookit: set masterKey.existingSecret (a Secret with key 'key') or masterKey.value (base64 of 32 bytes, e.g. `openssl rand -base64 32`)" }}
{{- end }}
{{- if and .Values.worker.autoscaling.enabled .Values.worker.keda.enabled }}
{{- fail "hookit: enable worker.keda or worker.autoscaling, not both: KEDA manages its own HPA, and two autoscalers would fight over the worker count" }}
{{- end }}
{{- if .Values.masterKey.value }}
{{- $raw := b64dec .Values.masterKey.value }}
{{- if ne (len $raw) 32 }}
{{- fail "hookit: masterKey.value must be base64 of exactly 32 bytes" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Environment shared by every HookIt container (database, key, tuning). */}}
{{- define "hookit.env" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      {{- if .Values.database.existingSecret }}
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.existingSecretKey }}
      {{- else }}
      name: {{ include "hookit.secretName" . }}
      key: database-url
      {{- end }}
- name: HOOKIT_MASTER_KEY
  valueFrom:
    secretKeyRef:
      {{- if .Values.masterKey.existingSecret }}
      name: {{ .Values.masterKey.existingSecret }}
      key: {{ .Values.masterKey.existingSecretKey }}
      {{- else }}
      name: {{ include "hookit.secretName" . }}
      key: master-key
      {{- end }}
{{- with .Values.allowPrivateTargets }}
- name: HOOKIT_ALLOW_PRIVATE_TARGETS
  value: {{ join "," . | quote }}
{{- end }}
- name: RUST_LOG
  value: {{ .Values.logLevel | quote }}
{{- with .Values.config }}
{{- if .retryBase }}
- name: HOOKIT_RETRY_BASE
  value: {{ .retryBase | toString | quote }}
{{- end }}
{{- if .retryCap }}
- name: HOOKIT_RETRY_CAP
  value: {{ .retryCap | toString | quote }}
{{- end }}
{{- if .maxAttempts }}
- name: HOOKIT_MAX_ATTEMPTS
  value: {{ .maxAttempts | toString | quote }}
{{- end }}
{{- if .lease }}
- name: HOOKIT_LEASE
  value: {{ .lease | toString | quote }}
{{- end }}
{{- if .maxPayload }}
- name: HOOKIT_MAX_PAYLOAD
  value: {{ .maxPayload | toString | quote }}
{{- end }}
{{- if .workerConcurrency }}
- name: HOOKIT_WORKER_CONCURRENCY
  value: {{ .workerConcurrency | toString | quote }}
{{- end }}
{{- end }}
- name: POD_NAME
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* OpenTelemetry settings of one container, after hookit.env (whose POD_NAME
and POD_NAMESPACE they expand): call with (dict "root" $ "role" "worker"). */}}
{{- define "hookit.tracingEnv" -}}
{{- with .root.Values.tracing }}
{{- if .endpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .endpoint | quote }}
- name: OTEL_SERVICE_NAME
  value: {{ printf "hookit-%s" $.role | quote }}
- name: OTEL_TRACES_SAMPLER
  value: parentbased_traceidratio
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ .sampleRatio | toString | quote }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "k8s.pod.name=$(POD_NAME),k8s.namespace.name=$(POD_NAMESPACE)"
{{- end }}
{{- end }}
{{- end }}

{{/* Annotation that restarts pods when the chart-managed Secret changes. */}}
{{- define "hookit.secretChecksum" -}}
checksum/secrets: {{ printf "%s|%s" .Values.database.url .Values.masterKey.value | sha256sum | trunc 16 }}
{{- end }}
