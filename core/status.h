/* Errors and logging inside the library. osc_error() records a thread-local message and returns
 * its status so callers can write `return osc_error(OSC_ERR_FORMAT, "...")`. */
#ifndef OSC_CORE_STATUS_H
#define OSC_CORE_STATUS_H
#include "oscar.h"

#if defined(__GNUC__)
#define OSC_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define OSC_PRINTF(a, b)
#endif

osc_status osc_error(osc_status s, const char *fmt, ...) OSC_PRINTF(2, 3);
/* Prefix the current message with more context: "ctx: old message". Returns s. */
osc_status osc_error_prefix(osc_status s, const char *fmt, ...) OSC_PRINTF(2, 3);
void osc_clear_error(void);
void osc_log(osc_log_level level, const char *fmt, ...) OSC_PRINTF(2, 3);

#define OSC_TRY(expr) do { osc_status _s = (expr); if (_s != OSC_OK) return _s; } while (0)

#endif
