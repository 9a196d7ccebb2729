/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-syscall.h as klpgen ships it: kpatch-build's KPATCH_SYSCALL_DEFINEn names on klpgen's
 * KLPGEN_SYSCALL_DEFINEn (<klpgen/klpgen.h>), which defines a syscall so that a livepatch can
 * replace it: the body inlined into the traceable entry stub, no error-injection or
 * syscall-tracing records. A patch that includes "kpatch-syscall.h" builds with `klpgen build`
 * unchanged. (x86-64; elsewhere the macros stop the build at the point of use, naming the
 * problem.) KPATCH_SYSCALL_DEFINE0 is klpgen's addition.
 */
#ifndef _KLPGEN_KPATCH_SYSCALL_H
#define _KLPGEN_KPATCH_SYSCALL_H

#include "kpatch-macros.h"

#ifdef __KERNEL__
#include <linux/syscalls.h>
#endif

#define KPATCH_SYSCALL_DEFINE0(name) KLPGEN_SYSCALL_DEFINE0(name)
#define KPATCH_SYSCALL_DEFINE1(name, ...) KLPGEN_SYSCALL_DEFINE1(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE2(name, ...) KLPGEN_SYSCALL_DEFINE2(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE3(name, ...) KLPGEN_SYSCALL_DEFINE3(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE4(name, ...) KLPGEN_SYSCALL_DEFINE4(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE5(name, ...) KLPGEN_SYSCALL_DEFINE5(name, __VA_ARGS__)
#define KPATCH_SYSCALL_DEFINE6(name, ...) KLPGEN_SYSCALL_DEFINE6(name, __VA_ARGS__)

#endif /* _KLPGEN_KPATCH_SYSCALL_H */
