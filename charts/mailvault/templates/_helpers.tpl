{{- define "mailvault.serviceAccountName" -}}
{{- default (printf "%s-operator" .Release.Name) .Values.serviceAccount.name -}}
{{- end -}}
{{- define "mailvault.labels" -}}
app.kubernetes.io/name: mailvault
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}
