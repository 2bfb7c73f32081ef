{{- define "sonde.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "sonde.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "sonde.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sonde.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "sonde.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "sonde.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "sonde.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sonde.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "sonde.otlpHeaders" -}}
{{- $parts := list -}}
{{- range $k, $v := .Values.otlp.headers -}}
{{- $parts = append $parts (printf "%s=%s" $k $v) -}}
{{- end -}}
{{- join "," $parts -}}
{{- end -}}

{{/* The capabilities added to the container, by securityContext.capabilityMode (values.yaml
says why each one is needed). */}}
{{- define "sonde.capabilities" -}}
{{- $sc := .Values.securityContext -}}
{{- $mode := $sc.capabilityMode | default "standard" -}}
{{- if eq $mode "standard" -}}
{{- toYaml (list "BPF" "PERFMON" "NET_ADMIN" "SYS_ADMIN" "SYS_PTRACE" "DAC_READ_SEARCH") -}}
{{- else if eq $mode "minimal" -}}
{{- toYaml (list "BPF" "PERFMON" "NET_ADMIN" "SYS_PTRACE" "DAC_READ_SEARCH") -}}
{{- else if eq $mode "legacy" -}}
{{- toYaml (list "SYS_ADMIN" "NET_ADMIN" "SYS_RESOURCE" "SYS_PTRACE" "DAC_READ_SEARCH") -}}
{{- else if and (eq $mode "custom") $sc.capabilities -}}
{{- toYaml $sc.capabilities -}}
{{- else if eq $mode "custom" -}}
{{- fail "securityContext.capabilityMode=custom needs securityContext.capabilities: list the capabilities to add (see values.yaml for what each one is for), or use capabilityMode standard, minimal or legacy" -}}
{{- else -}}
{{- fail (printf "securityContext.capabilityMode=%q: use standard, minimal, legacy or custom" $mode) -}}
{{- end -}}
{{- end -}}
