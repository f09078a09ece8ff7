import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { TokenBrokerProvider } from 'token-broker/react';
import App from './App.jsx';
import { broker } from './auth.js';
import '../../shared/timeline.css';
import './style.css';

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <TokenBrokerProvider broker={broker}>
      <App />
    </TokenBrokerProvider>
  </StrictMode>,
);
