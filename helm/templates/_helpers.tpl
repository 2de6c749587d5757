{{/* Names and labels shared by regflow's own templates. */}}
{{- define "regflow.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "regflow.labels" -}}
app.kubernetes.io/name: {{ include "regflow.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "regflow.jobNamespace" -}}
{{- .Values.jobNamespace | default .Release.Namespace -}}
{{- end -}}

{{- define "regflow.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
