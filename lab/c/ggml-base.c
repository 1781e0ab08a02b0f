/* Stand-in for lib/ollama/libggml-base.so: the core every ggml backend links against.
 * Backends import ggml_log from here, so each of them carries DT_NEEDED libggml-base.so. */
#include <stdarg.h>
#include <stdio.h>

#include "ggml-lab.h"

void ggml_log(const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vfprintf(stderr, fmt, args);
    va_end(args);
}
