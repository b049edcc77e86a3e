/* AF_VSOCK address, declared here because musl ships no Linux UAPI headers. */
#ifndef MVM_GUEST_VSOCK_H
#define MVM_GUEST_VSOCK_H

#include <sys/socket.h>

#ifndef VMADDR_CID_ANY
#define VMADDR_CID_ANY 0xffffffffu
#define VMADDR_CID_HOST 2u

/* Same layout as struct sockaddr_vm in <linux/vm_sockets.h>. */
struct sockaddr_vm {
    sa_family_t svm_family;
    unsigned short svm_reserved1;
    unsigned int svm_port;
    unsigned int svm_cid;
    unsigned char svm_zero[sizeof(struct sockaddr) - sizeof(sa_family_t) -
                           sizeof(unsigned short) - sizeof(unsigned int) - sizeof(unsigned int)];
};
#endif

#endif
