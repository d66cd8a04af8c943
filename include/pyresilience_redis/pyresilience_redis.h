/* pyresilience_redis.h - the umbrella header of the Redis library
 * (libpyresilience_redis.a, built when hiredis is found): distributed rate
 * limiting over Redis. It needs the core's headers (include/pyresilience) and
 * links against libpyresilience.a and hiredis. */
#ifndef PYRESILIENCE_REDIS_H
#define PYRESILIENCE_REDIS_H
#include "pyresilience.h"
#include "prs_redis.h"
#endif
