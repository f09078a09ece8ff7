// The request waterfall. The geometry comes from examples/shared/timeline.js (layoutTimeline), the
// same function the Vue dashboard renders; this component only draws it.
import { useEffect, useId, useMemo, useRef, useState } from 'react';
import { layoutTimeline } from '../../shared/timeline.js';

export default function Timeline({ snapshot, now, rowHeight = 15, labelWidth = 178, testid = 'timeline', legend = true, badges = false }) {
  const box = useRef(null);
  const [width, setWidth] = useState(700);
  useEffect(() => {
    setWidth(box.current.clientWidth || 700);
    const observer = new ResizeObserver(([entry]) => setWidth(Math.floor(entry.contentRect.width)));
    observer.observe(box.current);
    return () => observer.disconnect();
  }, []);
  const g = useMemo(() => layoutTimeline(snapshot, { width, now, rowHeight, labelWidth, badges }), [snapshot, width, now, rowHeight, labelWidth, badges]);
  const uid = useId().replace(/:/g, '');
  const fill = (r) => (r.bar.fill === 'hatch' ? `url(#${uid}-hatch)` : r.bar.fill);

  return (
    <div ref={box} className="tl-box">
      <svg width={g.width} height={g.height} data-testid={testid} data-rows={g.count} role="img" className={g.narrow ? 'tl tl-narrow' : 'tl'}
           aria-label="Request waterfall: one row per HTTP request, time from left to right">
        <defs>
          <marker id={`${uid}-arrow`} viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" orient="auto">
            <path d="M0,0 L8,4 L0,8 z" fill="var(--tl-replay)" />
          </marker>
          <pattern id={`${uid}-hatch`} width="5" height="5" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">
            <rect width="5" height="5" fill="var(--tl-refresh)" />
            <line x1="0" y1="0" x2="0" y2="5" stroke="rgba(255,255,255,.35)" strokeWidth="2" />
          </pattern>
        </defs>
        <g className="tl-axis">
          {g.ticks.map((t) => (
            <g key={t.t}>
              <line x1={t.x} x2={t.x} y1={g.top - 4} y2={g.height - 6} />
              <text x={t.x} y={g.top - 8} textAnchor="middle">{t.label}</text>
            </g>
          ))}
        </g>
        {!g.count && <text x={g.labelWidth} y={g.top + 10} className="tl-empty">no requests yet</text>}
        {g.rows.map((r) => (
          <g key={r.id} className={`tl-row ${r.kind}`} data-testid="tl-row" data-kind={r.kind}
             data-status={r.status ?? 'pending'} data-attempt={r.attempt} data-waited={String(!!r.wait)}
             data-retry={r.retry ?? ''} data-scheme={r.scheme ?? ''} data-challenge={r.challenge ?? ''}>
            <title>{r.title}</title>
            {r.stripe && <rect className="tl-stripe" x="0" y={r.y - 2} width={g.width} height={g.rowHeight} />}
            {r.badge && (
              <g className={`tl-badge ${r.badge.cls}`} data-testid="tl-badge">
                <rect x={r.badge.x} y={r.y - 1} width={r.badge.width} height={g.barH + 2} rx="3" />
                <text x={r.badge.x + r.badge.width / 2} y={r.y + g.barH - 1} textAnchor="middle">{r.badge.text}</text>
              </g>
            )}
            <text x={g.labelWidth - 8} y={r.y + g.barH - 1} textAnchor="end" className="tl-label">{r.label}</text>
            {r.wait && <line className="tl-wait" x1={r.wait.x1} x2={r.wait.x2} y1={r.y + g.barH / 2} y2={r.y + g.barH / 2} />}
            <rect className="tl-bar" x={r.bar.x} y={r.y} height={g.barH} rx="2" width={r.bar.width} fill={fill(r)} />
            <text x={r.statusX} y={r.y + g.barH - 1} className="tl-status">{r.statusText}</text>
          </g>
        ))}
        {g.arrows.map((a) => <path key={`a${a.id}`} d={a.d} className={a.nonce ? 'tl-arrow nonce' : 'tl-arrow'} markerEnd={`url(#${uid}-arrow)`} />)}
      </svg>
      {legend && (
        <div className="tl-legend">
          {g.legend.map((l) => <span key={l.key}><i className={`tl-sw ${l.key}`} />{l.text}</span>)}
        </div>
      )}
    </div>
  );
}
