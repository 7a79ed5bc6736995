// scratch: futex ping-pong between two processes; server waits with futex_wait or futex_waitv
use rustix::mm::{mmap_anonymous, MapFlags, ProtFlags};
use rustix::thread::futex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

fn main() {
    let mode: u32 = std::env::args().nth(1).map_or(0, |s| s.parse().unwrap());
    let n = 200_000u32;
    let p = unsafe {
        mmap_anonymous(
            std::ptr::null_mut(),
            4096,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
        )
        .unwrap()
    };
    let rq: &AtomicU32 = unsafe { &*(p as *const AtomicU32) };
    let rp: &AtomicU32 = unsafe { &*((p as *const AtomicU32).add(16)) };
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let private = AtomicU32::new(0);
        let mut last = 0;
        loop {
            while rq.load(Ordering::Acquire) == last {
                match mode {
                    0 => {
                        let _ = futex::wait(rq, futex::Flags::empty(), last, None);
                    }
                    _ => {
                        let ws = [
                            futex::Wait::new()
                                .uaddr(private.as_ptr())
                                .val(0)
                                .flags(futex::WaitFlags::SIZE_U32 | futex::WaitFlags::PRIVATE),
                            futex::Wait::new()
                                .uaddr(rq.as_ptr())
                                .val(last)
                                .flags(futex::WaitFlags::SIZE_U32),
                        ];
                        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
                        let until = rustix::time::Timespec {
                            tv_sec: now.tv_sec + 100,
                            tv_nsec: 0,
                        };
                        let _ = futex::waitv(
                            &ws[(if mode == 2 { 1 } else { 0 })..],
                            futex::WaitvFlags::empty(),
                            Some(&until),
                            rustix::time::ClockId::Monotonic,
                        );
                    }
                }
            }
            last = rq.load(Ordering::Acquire);
            rp.store(last, Ordering::Release);
            let _ = futex::wake(rp, futex::Flags::empty(), 1);
            if last == n {
                std::process::exit(0);
            }
        }
    }
    let t = Instant::now();
    for i in 1..=n {
        rq.store(i, Ordering::Release);
        let _ = futex::wake(rq, futex::Flags::empty(), 1);
        while rp.load(Ordering::Acquire) != i {
            let _ = futex::wait(rp, futex::Flags::empty(), rp.load(Ordering::Acquire), None);
        }
    }
    println!(
        "mode {mode}: {:.2} us/rt",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
