import { StrictMode, useEffect, useRef, useSyncExternalStore } from 'react';
import { createRoot } from 'react-dom/client';
import { TokenBrokerProvider } from 'token-broker/react';
import App from './App.jsx';
import { page } from './auth.js';
import '../../shared/timeline.css';
import './style.css';

/** The page's broker (a new one when the DPoP switch changes) for <TokenBrokerProvider>. */
function Root() {
  const { broker } = useSyncExternalStore(page.subscribe, page.getSnapshot);
  const previous = useRef(null);
  useEffect(() => {
    // Once React renders with the new broker, nothing reads the old one: free it.
    if (previous.current && previous.current !== broker) previous.current.dispose();
    previous.current = broker;
  }, [broker]);
  return (
    <TokenBrokerProvider broker={broker}>
      <App />
    </TokenBrokerProvider>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <Root />
  </StrictMode>,
);
