/*
 * ignite-init: vm.env, the VM's settings as the host wrote them
 * (ignitevm/operations/guestconfig.py: KEY=value lines, each value quoted
 * with Python's shlex.quote), read as POSIX sh would read them, without a shell.
 */
#include "init.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int is_name(const char *s, size_t n)
{
    if (n == 0 || (s[0] >= '0' && s[0] <= '9'))
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
              (s[i] >= '0' && s[i] <= '9')))
            return 0;
    return 1;
}

/* One value as sh reads it after "KEY=": unquoted text (a backslash quotes
 * the next character), '...' (literal) and "..." (\ quotes $ ` " \ and a
 * newline) joined, up to an unquoted blank or the end of the line. */
static char *sh_value(const char **pp, const char *end, char *err, size_t errlen)
{
    const char *p = *pp;
    char *out = malloc((size_t)(end - p) + 1), *o = out;
    if (!out) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    while (p < end && *p != '\n' && *p != ' ' && *p != '\t') {
        if (*p == '\'') {
            const char *close = memchr(p + 1, '\'', (size_t)(end - p - 1));
            if (!close)
                goto unterminated;
            memcpy(o, p + 1, (size_t)(close - p - 1));
            o += close - p - 1;
            p = close + 1;
        } else if (*p == '"') {
            for (p++; p < end && *p != '"'; p++) {
                if (*p == '\\' && p + 1 < end && strchr("$`\"\\\n", p[1])) {
                    if (p[1] != '\n')
                        *o++ = p[1];
                    p++;
                } else if (*p == '$' || *p == '`') {
                    snprintf(err, errlen, "expansions are not supported");
                    free(out);
                    return NULL;
                } else {
                    *o++ = *p;
                }
            }
            if (p == end)
                goto unterminated;
            p++;
        } else if (*p == '\\') {
            if (p + 1 < end && p[1] != '\n')
                *o++ = p[1];
            p += p + 1 < end ? 2 : 1;
        } else if (*p == '$' || *p == '`' || strchr(";&|<>()", *p)) {
            snprintf(err, errlen, "unquoted '%c'", *p);
            free(out);
            return NULL;
        } else {
            *o++ = *p++;
        }
    }
    *o = '\0';
    *pp = p;
    return out;
unterminated:
    snprintf(err, errlen, "an unterminated quote");
    free(out);
    return NULL;
}

int env_parse(struct env *e, const char *text, size_t len, char *err, size_t errlen)
{
    const char *p = text, *end = text + len;
    int line = 1;
    e->n = 0;
    while (p < end) {
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p == '#')
            while (p < end && *p != '\n')
                p++;
        if (p < end && *p == '\n') {
            p++, line++;
            continue;
        }
        if (p == end)
            break;
        const char *eq = p;
        while (eq < end && *eq != '=' && *eq != '\n' && *eq != ' ')
            eq++;
        if (eq == end || *eq != '=' || !is_name(p, (size_t)(eq - p))) {
            snprintf(err, errlen, "line %d: not KEY=value", line);
            return -1;
        }
        const char *v = eq + 1;
        char why[128];
        char *val = sh_value(&v, end, why, sizeof why);
        if (!val) {
            snprintf(err, errlen, "line %d: %s", line, why);
            return -1;
        }
        while (v < end && (*v == ' ' || *v == '\t'))
            v++;
        if (v < end && *v != '\n' && *v != '#') {
            free(val);
            snprintf(err, errlen, "line %d: more than one word", line);
            return -1;
        }
        for (const char *c = p; c < v; c++)
            line += *c == '\n';
        int i;
        for (i = 0; i < e->n && !(strncmp(e->key[i], p, (size_t)(eq - p)) == 0 &&
                                  e->key[i][eq - p] == '\0'); i++)
            ;
        if (i == e->n) {
            if (e->n == ENV_MAX) {
                free(val);
                snprintf(err, errlen, "more than %d settings", ENV_MAX);
                return -1;
            }
            e->key[e->n++] = strndup(p, (size_t)(eq - p));
        } else {
            free(e->val[i]);                    /* (the last one wins, as in sh) */
        }
        e->val[i] = val;
        p = v;
    }
    return 0;
}

const char *env_get(const struct env *e, const char *key)
{
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->key[i], key) == 0)
            return e->val[i];
    return "";
}

const char *next_word(const char **pos, char *buf, size_t len)
{
    const char *p = *pos + strspn(*pos, " \t\n");
    size_t n = strcspn(p, " \t\n");
    if (n == 0)
        return NULL;
    if (n >= len)
        n = len - 1;
    memcpy(buf, p, n);
    buf[n] = '\0';
    p += strcspn(p, " \t\n");
    *pos = p;
    return buf;
}

