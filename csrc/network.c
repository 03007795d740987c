#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "network.h"

static int osv_ifreq(struct ifreq *ifr, const char *name) {
    if (strlen(name) >= IFNAMSIZ) {
        errno = EINVAL;
        return -1;
    }
    memset(ifr, 0, sizeof *ifr);
    strcpy(ifr->ifr_name, name);
    return 0;
}

int osv_ifflags_get(int sockfd, const char *name) {
    struct ifreq ifr;
    if (osv_ifreq(&ifr, name) == -1 || ioctl(sockfd, SIOCGIFFLAGS, &ifr) == -1)
        return -1;
    return (unsigned short)ifr.ifr_flags; /* a short in struct ifreq: the low 16 flags only */
}

int osv_ifflags_set(int sockfd, const char *name, int flags) {
    struct ifreq ifr;
    if (osv_ifreq(&ifr, name) == -1)
        return -1;
    ifr.ifr_flags = (short)flags;
    return ioctl(sockfd, SIOCSIFFLAGS, &ifr);
}
