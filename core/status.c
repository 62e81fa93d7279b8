#include "status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char g_msg[1024];
static osc_log_fn g_log_fn;
static void *g_log_user;
static osc_log_level g_log_min = OSC_LOG_INFO;

const char *osc_last_error(void) { return g_msg; }
void osc_clear_error(void) { g_msg[0] = 0; }

const char *osc_status_name(osc_status s) {
    switch (s) {
    case OSC_OK: return "ok";
    case OSC_ERR_INVALID_ARG: return "invalid argument";
    case OSC_ERR_IO: return "i/o error";
    case OSC_ERR_FORMAT: return "bad format";
    case OSC_ERR_OOM: return "out of memory";
    case OSC_ERR_UNSUPPORTED: return "unsupported";
    case OSC_ERR_CONTEXT: return "context full";
    case OSC_ERR_DEVICE: return "device error";
    case OSC_ERR_CANCELLED: return "cancelled";
    }
    return "unknown";
}

osc_status osc_error(osc_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_msg, sizeof g_msg, fmt, ap);
    va_end(ap);
    return s;
}

osc_status osc_error_prefix(osc_status s, const char *fmt, ...) {
    char pre[256], old[sizeof g_msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_msg, sizeof old);
    int n = snprintf(g_msg, sizeof g_msg, "%s: ", pre);
    if (n >= 0 && (size_t)n < sizeof g_msg) snprintf(g_msg + n, sizeof g_msg - (size_t)n, "%s", old);
    return s;
}

void osc_set_log_callback(osc_log_fn fn, void *user, osc_log_level min_level) {
    g_log_fn = fn;
    g_log_user = user;
    g_log_min = min_level;
}

void osc_log(osc_log_level level, const char *fmt, ...) {
    if (!g_log_fn || level < g_log_min) return;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_log_fn(level, buf, g_log_user);
}
