#include "pm_signal.h"

#include <signal.h>
#include <string.h>

static volatile sig_atomic_t pending_signal;

static void on_stop_signal(int sig)
{
    if (pending_signal && (sig == SIGINT || sig == SIGTERM)) {
        // Asked twice: stop now with the default action.
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (!pending_signal)
        pending_signal = sig;
}

void pm_signal_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    int sigs[] = {SIGTERM, SIGUSR1, SIGUSR2, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaction(sigs[i], &sa, NULL);
}

int pm_signal_pending(void)
{
    return pending_signal;
}
