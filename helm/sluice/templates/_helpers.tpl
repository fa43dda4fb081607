{{/* Names, labels and the operator's RBAC rules, shared by the templates. */}}

{{- define "sluice.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "sluice.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sluice.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sluice.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sluice.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: sluice
{{- end -}}

{{- define "sluice.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sluice.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sluice.leaseName" -}}
{{- printf "%s-leader" (include "sluice.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sluice.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The operator's rules, in a ClusterRole or in one Role per watched namespace.
Each is a call the operator makes (operator/sluice/reconcile/, handlers.py):
- InferenceServices: kopf watches them; the reconciler gets and lists them.
- InferenceServices' status: the reconciler replaces it (optimistic concurrency).
  Never the spec: that is the user's (or git's).
- Deployments, Services, HTTPRoutes, PodMonitors: the children. Watched (kopf, by
  label), read, server-side applied (patch, and create for a new one) and pruned.
- Pods of the children: listed (read only), to say why a variant is not ready
  (unschedulable, image pull, crash) and to hold scaling while new pods warm up.
- Events: posted on InferenceServices (create only).
Nothing else: no Secrets (model-store credentials are referenced by name in the
pod spec and read by the kubelet), no writes to Pods, no ConfigMaps, no scale
subresource.
*/}}
{{- define "sluice.rules" -}}
- apiGroups: [sluice.dev]
  resources: [inferenceservices]
  verbs: [get, list, watch]
- apiGroups: [sluice.dev]
  resources: [inferenceservices/status]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [podmonitors]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* Checks the schema cannot express across values. */}}
{{- define "sluice.validate" -}}
{{- $le := .Values.leaderElection -}}
{{- if and $le.enabled (not (lt (float64 $le.renewDeadlineSeconds) (float64 $le.leaseDurationSeconds))) -}}
{{- fail "leaderElection.renewDeadlineSeconds must be below leaderElection.leaseDurationSeconds" -}}
{{- end -}}
{{- if and $le.enabled (not (lt (float64 $le.retryPeriodSeconds) (float64 $le.renewDeadlineSeconds))) -}}
{{- fail "leaderElection.retryPeriodSeconds must be below leaderElection.renewDeadlineSeconds" -}}
{{- end -}}
{{- if and .Values.prometheus.ca.configMapName .Values.prometheus.ca.secretName -}}
{{- fail "set at most one of prometheus.ca.configMapName and prometheus.ca.secretName" -}}
{{- end -}}
{{- if and .Values.prometheus.bearerToken.useServiceAccountToken .Values.prometheus.bearerToken.secretName -}}
{{- fail "set at most one of prometheus.bearerToken.useServiceAccountToken and prometheus.bearerToken.secretName" -}}
{{- end -}}
{{- end -}}
