"""hostbay's own help answers, added once to an empty help table (staff edit them on Staff › Help pages).
They describe how hostbay really works: docs/billing.md, docs/lifecycle.md, docs/console.md."""

ENTRIES: list[tuple[str, str]] = [
    ("How does prepaid billing work?",
     "You add US dollars to your wallet first (**Add funds**). Orders, renewals, upgrades and any charge our staff "
     "make are taken from that balance, and every movement appears in **Billing** with the balance after it.\n\n"
     "Nothing is charged to a card automatically: if your wallet does not cover a renewal, the service is "
     "suspended instead (see *What happens when a service is not renewed?*)."),
    ("When and how are services renewed?",
     "Each service renews at the end of its cycle (monthly, quarterly or yearly, as you ordered it) from your "
     "wallet. We e-mail you 7 days and 1 day before the renewal date. A renewal is charged exactly once per period.\n\n"
     "If you have several services due at the same time and the balance covers only some of them, the oldest ones "
     "are renewed first. You can renew a service early from its page with **Renew**."),
    ("What happens when a service is not renewed?",
     "If the wallet balance is too low on the renewal date, the service is **suspended**: the server is stopped and "
     "the console is unavailable, but nothing is deleted. The service page shows the amount to add.\n\n"
     "The service is kept for a retention period of 3 days. Add funds and press **Renew** within that time and the "
     "service is reactivated. After the retention period the service is queued for removal and its data is "
     "deleted; it can no longer be recovered.\n\n"
     "A service suspended by our staff is not lifted by a payment: open a support ticket."),
    ("Can I change my package?",
     "Yes, from the service page (**Change package**). An upgrade is charged pro-rata for the time left until the "
     "renewal date; a downgrade credits the pro-rata difference to your wallet. The renewal date does not move, and "
     "the next renewal charges the new package's price. If the new disk is smaller, the server must be rebuilt and "
     "its data is erased: you are asked to confirm this by typing the hostname."),
    ("Can I get a refund?",
     "Downgrade credits and bonuses are wallet credits: they pay for future orders and renewals and are not paid "
     "out.\n\n"
     "Money you topped up and have not spent yet can be refunded externally: ask for it on the **Billing** page. "
     "Our staff review every request by hand under the Terms of Service and, if they approve, pay it out and record "
     "it in your billing history. If they decline, you see their note."),
    ("Can I use my own ISO image?",
     "Yes, for virtual servers. Upload the ISO on **ISO images**; it counts toward your quota (shown as bars on that "
     "page) while it waits for approval or is approved. Once our staff approve it, mount it on the service page and "
     "boot from it. If it is rejected, you see the reason and its file is removed."),
    ("How do I use the console?",
     "Virtual servers have a web console on their service page. Each time you open it, the panel creates a "
     "single-use access that is valid for at most 60 seconds and only for your own service; the session itself "
     "stays open as long as you use it. The console is not available while a service is suspended."),
    ("How do I reinstall or cancel a server?",
     "On the service page. Reinstalling erases the disk and keeps your SSH keys; cancelling now removes the server "
     "and its data. Both ask you to type the server's hostname, so they cannot happen by a stray click. You can "
     "also cancel at the end of the paid period, which keeps the server until then."),
    ("How do I contact support?",
     "Signed in, open a ticket under **Support** and choose the service it is about. Without an account, use the "
     "contact page. Current incidents and maintenance are on the status page."),
]
