{{- define "mailvault.serviceAccountName" -}}
{{- default (printf "%s-operator" .Release.Name) .Values.serviceAccount.name -}}
{{- end -}}
{{- define "mailvault.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "mailvault.labels" -}}
app.kubernetes.io/name: mailvault
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "mailvault.selectorLabels" -}}
app.kubernetes.io/name: mailvault
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}
{{- define "mailvault.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}
{{- end -}}
{{- end -}}
{{/* The spool emptyDir's size: largest message x 2 (message and compressed copy) x runs. */}}
{{- define "mailvault.spoolSizeMiB" -}}
{{- mul .Values.spool.largestMessageMiB 4 .Values.operator.concurrentRuns -}}
{{- end -}}
{{/* What the operator may do in a namespace it archives in: the rules of templates/rbac.yaml. */}}
{{- define "mailvault.archiveRules" -}}
# Read the resources it reconciles.
- apiGroups: ["mailvault.io"]
  resources: ["mailboxarchives", "retentionpolicies", "legalholds"]
  verbs: ["get", "list", "watch"]
# Write their status (server-side apply is a PATCH); never their spec.
- apiGroups: ["mailvault.io"]
  resources: ["mailboxarchives/status", "retentionpolicies/status", "legalholds/status",
             "dispositionreviews/status"]
  verbs: ["patch"]
# Add and remove its finalizer on LegalHolds (a PATCH of metadata.finalizers: an unreleased
# hold is never deleted; docs/lifecycle.md). It never edits a hold's spec.
- apiGroups: ["mailvault.io"]
  resources: ["legalholds"]
  verbs: ["patch"]
# Destruction: read the records officers' decisions, create a DispositionReview per due batch
# (never change or delete one: a decision is the officer's; the operator writes only its
# status, above).
- apiGroups: ["mailvault.io"]
  resources: ["dispositionreviews"]
  verbs: ["get", "list", "create"]
{{ include "mailvault.secretAndEventRules" . }}
{{- end -}}
{{- define "mailvault.secretAndEventRules" -}}
# Read the IMAP password, S3 credentials, CA bundle and signing key a MailboxArchive names
# (used only if the Secret opted in for that archive: mailvault.io/allowed-archives); create
# the signing-key Secret when the archive names none. No list, watch, update or delete.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "create"]
# Events for every run and every failure (events.k8s.io/v1; a repeat is a PATCH of the series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# runner: Job. A Job per run, and each archive's run identity: a ServiceAccount and a Role
# (with its RoleBinding) that grants only what that archive's run needs. RBAC lets the operator
# grant only rights it holds itself, so nothing here widens what it can reach.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch"]
{{- end -}}
