#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
int main(int c, char **v) { char p[64]; snprintf(p, 64, "/proc/%s/environ", v[1]); FILE *f = fopen(p, "r"); printf("environ: %s\n", f ? "ok" : strerror(errno));
 snprintf(p, 64, "/proc/%s/root/etc/hostname", v[1]); f = fopen(p, "r"); printf("root/etc/hostname: %s\n", f ? "ok" : strerror(errno));
 snprintf(p, 64, "/proc/%s/exe", v[1]); f = fopen(p, "r"); printf("exe: %s\n", f ? "ok" : strerror(errno)); return 0; }
