/* SPDX-License-Identifier: GPL-2.0 */
/*
 * kpatch-macros.h as klpgen ships it: the macro names of kpatch-build's header of this name,
 * with their meaning, implemented on klpgen's annotations (<klpgen/klpgen.h>), so that a patch
 * written for kpatch-build builds with `klpgen build` unchanged. `klpgen build` puts this file
 * on the include path of the units it compiles, as kpatch-build did with its own, so
 *
 *	#include "kpatch-macros.h"
 *
 * finds it. (Objects compiled with kpatch's own header work too: klpgen reads the `.kpatch.*`
 * records it leaves.) See docs/from-kpatch.md.
 *
 *   KPATCH_IGNORE_FUNCTION(fn)          KLPGEN_IGNORE_FUNCTION(fn)
 *   KPATCH_IGNORE_SECTION("name")       KLPGEN_IGNORE_SECTION("name")
 *   KPATCH_PRE_PATCH_CALLBACK(fn)       KLPGEN_PRE_PATCH_CALLBACK(fn), likewise POST_PATCH,
 *                                       PRE_UNPATCH and POST_UNPATCH
 *   patch_object                        struct klp_object, what the callbacks get
 *   KPATCH_FORCE_UNSAFE(fn)             accepted, and noted in klpgen's output: upstream
 *                                       livepatch cannot exempt one function from its
 *                                       consistency model, so it has no effect
 *   KPATCH_PRINTK(fmt, ...)             printk() on a branch of its own (see below)
 *   KPATCH_STATIC_CALL(name)            the static call's current target, called through its
 *                                       key like a function pointer
 *   kpatch_shadow_alloc/_get/_free      kpatch's old shadow-variable calls (a variable named
 *                                       by a string) on the kernel's klp_shadow_* API
 *
 * The syscall macros (KPATCH_SYSCALL_DEFINEn) are in "kpatch-syscall.h".
 */
#ifndef _KLPGEN_KPATCH_MACROS_H
#define _KLPGEN_KPATCH_MACROS_H

#include <klpgen/klpgen.h>

typedef struct klp_object patch_object;

#define KPATCH_IGNORE_FUNCTION(fn) KLPGEN_IGNORE_FUNCTION(fn)
#define KPATCH_IGNORE_SECTION(name) KLPGEN_IGNORE_SECTION(name)

#define KPATCH_PRE_PATCH_CALLBACK(fn) KLPGEN_PRE_PATCH_CALLBACK(fn)
#define KPATCH_POST_PATCH_CALLBACK(fn) KLPGEN_POST_PATCH_CALLBACK(fn)
#define KPATCH_PRE_UNPATCH_CALLBACK(fn) KLPGEN_PRE_UNPATCH_CALLBACK(fn)
#define KPATCH_POST_UNPATCH_CALLBACK(fn) KLPGEN_POST_UNPATCH_CALLBACK(fn)

/*
 * kpatch's core module skipped its stack check for these functions. The name is recorded (as
 * klpgen's ignore records are, by name, so the function's code is not affected) for klpgen to
 * say that it does nothing.
 */
#define KPATCH_FORCE_UNSAFE(fn)							\
	_Static_assert(sizeof(&(fn)) != 0, "KPATCH_FORCE_UNSAFE(" #fn ")");	\
	static const char __klpgen_force_unsafe_##fn[]				\
	__attribute__((__used__, __aligned__(1),				\
		       __section__(".klpgen.force_unsafe.functions"))) = #fn

#ifdef __KERNEL__
/*
 * printk() is declared cold: GCC takes every path that reaches it for unlikely, and may move
 * the code around the call out of line, so a function that only gained a message would change
 * in places the patch did not touch. A condition that is always true but that the compiler
 * cannot see through (an empty asm may change the value) keeps the call on a branch of its
 * own, and only that branch is cold.
 */
#define KPATCH_PRINTK(fmt, ...)							\
	do {									\
		int __klpgen_printk_on = 1;					\
		__asm__ ("" : "+r" (__klpgen_printk_on));			\
		if (__klpgen_printk_on)						\
			printk(fmt, ##__VA_ARGS__);				\
	} while (0)

/*
 * static_call(name)(args) as an ordinary indirect call through the key's current function:
 * no `.static_call_sites` entry, so also usable when the key is a module's.
 * Used as KPATCH_STATIC_CALL(name)(args).
 */
#define KPATCH_STATIC_CALL(name)						\
	((typeof(STATIC_CALL_TRAMP(name)) *)(READ_ONCE(STATIC_CALL_KEY(name).func)))

/*
 * kpatch's core module named a shadow variable by a string; the kernel's API takes a number.
 * The number is a 64-bit FNV-1a hash of the name (never 0), so the same name gives the same
 * variable in every livepatch built this way. Macros, so that nothing here needs a kernel
 * with the klp_shadow_* API unless it is used.
 */
static inline unsigned long klpgen__shadow_id(const char *var)
{
	unsigned long long h = 0xcbf29ce484222325ULL;

	while (*var) {
		h ^= (unsigned char)*var++;
		h *= 0x100000001b3ULL;
	}
	return h ? (unsigned long)h : 1;
}

#define kpatch_shadow_alloc(obj, var, size, gfp)				\
	klp_shadow_alloc((obj), klpgen__shadow_id(var), (size), (gfp), NULL, NULL)
#define kpatch_shadow_get(obj, var) klp_shadow_get((obj), klpgen__shadow_id(var))
#define kpatch_shadow_free(obj, var)						\
	klp_shadow_free((obj), klpgen__shadow_id(var), NULL)
#endif /* __KERNEL__ */

#endif /* _KLPGEN_KPATCH_MACROS_H */
