/* network: an interface's flags through ioctl(2) on a socket of its network
 * namespace (SIOCGIFFLAGS, SIOCSIFFLAGS): lo is brought up so, with no
 * netlink library in a container's start path; IFNAMSIZ and the IFF_* flags
 * netlink reports, for osvirt.container.network. */
#ifndef OSV_NETWORK_H
#define OSV_NETWORK_H
#include <net/if.h>
#include <linux/if.h> /* IFF_LOWER_UP: glibc's <net/if.h> stops at IFF_DYNAMIC (libc-compat.h lets both in) */

#ifdef OSV_CDEF
static const int IFNAMSIZ, IFF_UP, IFF_LOWER_UP;
#endif

/* The flags of interface `name` in `sockfd`'s network namespace, or -1 and errno. */
int osv_ifflags_get(int sockfd, const char *name);
/* Set them (SIOCSIFFLAGS: CAP_NET_ADMIN over that namespace). */
int osv_ifflags_set(int sockfd, const char *name, int flags);

#endif
